#!/bin/bash
# Issue 10 (compute): the paper profile's ensemble experiment (68 runs: every ensemble member and
# every model distilled from one, with the jittered members' views) timed end to end from an
# empty folder, to check the from-records estimate's views and overheads. Frozen code
# /work/wt-e2e-ens at b626910.
cd /work/wt-e2e-ens && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-e2e-ens
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/e2e-ens \
  --experiment ensemble --jobs 2 --no-progress
date +"end %F %T"; uptime
