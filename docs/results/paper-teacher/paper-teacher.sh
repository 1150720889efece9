#!/usr/bin/env bash
# The paper's teacher, on one thread (a core stays free); re-run this script to resume.
cd "$(dirname "$0")/.." && . .venv/bin/activate
resume=""; [ -d runs/paper-teacher ] && resume="--resume"
export OMP_NUM_THREADS=1
exec kdistill train --dataset mnist --data-dir ../shared/data \
  --model mlp:1200x1200,dropout=0.5,input_dropout=0.2,input_mean=0.5,input_std=0.5 \
  --max-norm 3.873 --jitter 2 --epochs 800 --batch-size 128 \
  --optimizer sgd --lr 0.01 --momentum 0.9 --schedule exponential --lr-decay 0.99309 \
  --bf16 --seed 0 --no-progress --out runs/paper-teacher $resume
