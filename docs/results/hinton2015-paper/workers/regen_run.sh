#!/bin/bash
# Issue 10: make again the runs whose weights the paper report reads (ensemble members,
# omit-3 and only-7s-and-8s students; the teacher copied from docs/results/paper-teacher) into
# runs/paper-new, which holds the committed records of every other run. Frozen code
# /work/wt-regen at e47ad5b.
cd /work/wt-regen && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-regen
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --teacher-run /work/main/docs/results/paper-teacher --data-dir /work/shared/data --out /work/main/runs/paper-new \
  --jobs 2 --no-progress
date +"end %F %T"; uptime
