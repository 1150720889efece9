#!/bin/bash
# Issue 10: seeds 1 and 2 of the unjittered ensemble's distilled 300-300 (paper profile as of
# faa4335: members on hard labels without jitter, seed 0 committed in hinton2015-paper), to
# tell its share of the gain from seed noise. Same flags as that plan's run.
ds=$1
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
teachers=""
for k in 0 1 2 3 4 5 6 7 8 9; do teachers="$teachers --teacher /work/main/runs/hinton2015-paper-sgd/$ds/hard-300x300/seed$k"; done
for seed in 1 2; do
  kdistill distill --dataset $ds --data-dir /work/shared/data --model mlp:300x300 $teachers \
    --epochs 60 --optimizer sgd --lr 0.1 --grad-clip 1 --temperature 20 --alpha 0.9 --bf16 \
    --seed $seed --out /work/main/scratch/ens-unjittered/$ds-seed$seed --no-progress 2>&1 | tail -1
done
