#!/bin/bash
# Issue 10 pilot 2: as dropens_run.sh, but members with a light regulariser, dropout 0.2 on the
# hidden units only (pilot 1's 0.5/0.2 left each member far worse than an unregularised one:
# MNIST 162 vs 145, Fashion-MNIST ~1,230 vs 993), distilled into the net without dropout at
# T = 20 and 5, 3 seeds. Frozen code /work/wt-dropens2 (main be35f50 + that profile change).
cd /work/wt-dropens2 && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-dropens2
[ "${JOBS:-2}" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date +"start %F %T"; uptime
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/dropens2 \
  --experiment ensemble --jobs ${JOBS:-2} --no-progress
date +"end %F %T"; uptime
