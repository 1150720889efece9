#!/bin/bash
# Issue 10 (compute): the paper profile with the teacher's schedule cut at 400 epochs (frozen
# code /work/wt-p5 at branch paper-t400), from the 400-epoch teacher (runs/teacher400, 61 errors)
# and every run of docs/results/hinton2015-paper that needs no teacher (hard links in runs/p5):
# the distilled students, --jobs 2, one thread each. Re-run to resume.
cd /work/wt-p5 && . /work/main/.venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=/work/wt-p5
date +"start %F %T"
/usr/bin/time -f "wall %e s" python -c "import kdistill, sys; print(kdistill.__file__); from kdistill.cli import main; sys.exit(main())" \
  reproduce hinton2015 --profile paper --seeds 3 --data-dir /work/shared/data --out /work/main/runs/p5 \
  --teacher-run /work/main/runs/teacher400 --jobs 2 --no-progress
date +"end %F %T"
