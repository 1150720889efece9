#!/bin/bash
# Pilot (issue 10): the jittered ensembles (members and distilled models jittered by up to 2 px,
# runs/p4 = docs/results/hinton2015-paper/pilots/ensembles-jittered) distilled at T = 5, the
# temperature at which the unjittered (memorising) members' ensembles kept most (78% / 52%).
# Same flags as that pilot's distilled runs but --temperature 5. One dataset, seeds 0-2.
ds=$1
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
teachers=""
for k in 0 1 2 3 4 5 6 7 8 9; do teachers="$teachers --teacher /work/main/runs/p4/$ds/hard-300x300-jitter2/seed$k"; done
for seed in 0 1 2; do
  kdistill distill --dataset $ds --data-dir /work/shared/data --model mlp:300x300 $teachers \
    --jitter 2 --epochs 60 --optimizer sgd --lr 0.1 --grad-clip 1 --temperature 5 --alpha 0.9 --bf16 \
    --seed $seed --out /work/main/scratch/ens-jitter-T5/$ds-seed$seed --no-progress 2>&1 | tail -1
done
