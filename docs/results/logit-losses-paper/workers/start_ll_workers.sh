#!/bin/bash
# Starts the two logit-losses workers (issue 13), one thread each: A the Fashion-MNIST teacher
# first (the long pole, with priority), B the MNIST runs first.
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 PYTHONPATH=${LL_CODE:-/work/wt-llrun}
nohup python scratch/ll_worker.py fashion-mnist/teacher >> runs/ll-worker-A.log 2>&1 &
echo "worker A: $!"; echo -10 > /proc/$!/autogroup
sleep 3
nohup python scratch/ll_worker.py '^mnist/' >> runs/ll-worker-B.log 2>&1 &
echo "worker B: $!"
