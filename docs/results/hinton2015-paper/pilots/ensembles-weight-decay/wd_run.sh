#!/bin/bash
# Issue 10 pilot 4: ensemble members and the models distilled from them with L2 weight decay
# 5e-4 (Profile.ensemble_weight_decay), the profile's plain 300-300 net and optimiser, 60 epochs;
# distilled at T = 20 and 5, 3 seeds. Frozen code /work/wt-wd (main 11c082c + that profile change).
cd /work/wt-wd && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-wd
[ "${JOBS:-2}" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/wd \
  --experiment ensemble --jobs ${JOBS:-2} --no-progress
date +"end %F %T"; uptime
