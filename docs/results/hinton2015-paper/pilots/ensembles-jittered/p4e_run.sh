#!/bin/bash
# Issue 10: the paper profile's ensemble experiment (jittered members and students, 3 seeds;
# frozen code /work/wt-p4e) into the same folder as scratch/p4_run.sh, beside it, one thread.
cd /work/wt-p4e && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-p4e OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date +"start %F %T"
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/p4 \
  --experiment ensemble --jobs 1 --no-progress
date +"end %F %T"
