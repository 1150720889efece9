#!/bin/bash
# Issue 10 pilot 3: pilot 2's members (dropout 0.2 on hidden units), distilled into students of
# their own kind (mlp:300x300,dropout=0.2) at T = 20, 5 and 2, 3 seeds. Members reused from
# runs/dropens2 (copied). Frozen code /work/wt-dropens3 (main f88e2b8 + that profile change).
cd /work/wt-dropens3 && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-dropens3
[ "${JOBS:-2}" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/dropens3 \
  --experiment ensemble --jobs ${JOBS:-2} --no-progress
date +"end %F %T"; uptime
