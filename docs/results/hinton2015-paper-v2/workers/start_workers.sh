#!/bin/bash
# Starts the two background paper workers (issue 10), one thread each, the first with priority.
cd /work/main && . .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 PYTHONPATH=${PAPER_CODE:-/work/wt-paperrun}
for name in A B; do
  nohup python scratch/${WORKER:-paper_worker.py} "$@" >> runs/worker-$name.log 2>&1 &
  echo "worker $name: $!"
  [ $name = A ] && echo -10 > /proc/$!/autogroup
  sleep 5
done
