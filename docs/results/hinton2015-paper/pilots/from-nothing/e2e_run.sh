#!/bin/bash
# Issue 10 (compute): the whole paper profile from nothing, --jobs 2, on otherwise idle cores,
# at a frozen checkout (/work/wt-e2e = 95e5a7f). Resumable: run again; each invocation's wall
# time is logged (the end-to-end figure is their sum, on idle cores).
cd /work/wt-e2e && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-e2e
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/paper-e2e \
  --jobs 2 --no-progress
date +"end %F %T"; uptime
