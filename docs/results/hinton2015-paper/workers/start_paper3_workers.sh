#!/bin/bash
# Issue 10: starts the paper profile's two student workers (scratch/paper3_worker.py, one thread
# each, frozen code /work/wt-paper3) as the logit-losses workers end: one as each ends.
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 PYTHONPATH=/work/wt-paper3
PRIO=('^mnist/hard-800x800/' '^mnist/distill-800x800-T20/' '^mnist/omit3' '^mnist/only78' '^mnist/small')
for n in 2 1; do
  while [ "$(pgrep -fc 'scratch/ll_worker.py')" -ge "$n" ]; do sleep 30; done
  nohup python scratch/paper3_worker.py "${PRIO[@]}" >> runs/paper3-worker-$n.log 2>&1 &
  echo "$(date +%T) paper worker $n: $!" >> runs/paper3-start.log
  sleep 5
done
