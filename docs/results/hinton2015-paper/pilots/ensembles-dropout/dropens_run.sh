#!/bin/bash
# Issue 10 pilot: the paper profile's ensemble experiment with members regularised as the
# paper's teacher is (dropout 0.5 on hidden units, 0.2 on inputs; no jitter), distilled models of
# the same kind (first 3 at T = 20 on MNIST: 280-290 errors) then the net without dropout
# (ensemble_student_model), at T = 20 and 5, 3 seeds. Frozen code /work/wt-dropens (main 57d449b + that
# profile change), --jobs 2.
cd /work/wt-dropens && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-dropens
[ "${JOBS:-2}" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/dropens \
  --experiment ensemble --jobs ${JOBS:-2} --no-progress
date +"end %F %T"; uptime
