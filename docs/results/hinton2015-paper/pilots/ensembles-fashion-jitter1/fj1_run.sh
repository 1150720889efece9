#!/bin/bash
# Issue 10 pilot: Fashion-MNIST ensemble with members and students jittered by 1 px (the
# profile's 2 px left members under-fitting: training loss 0.23, 33% of the gain kept at T = 5).
# Frozen code /work/wt-fj1 (main at e47ad5b + the pilot profiles of profile.diff).
cd /work/wt-fj1 && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-fj1
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile pilot-fashion-jitter1 --seeds 3 --data-dir /work/shared/data --out /work/main/runs/fj1 \
  --experiment ensemble --jobs 2 --no-progress
date +"end %F %T"; uptime
