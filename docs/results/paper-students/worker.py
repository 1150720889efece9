"""Runs given keys of the paper plan (main table) into runs/hinton2015-paper, after copying the
finished teacher in; never starts a run whose folder exists. Usage: worker.py KEY [KEY ...]"""
import sys
from pathlib import Path

from kdistill.experiments import hinton2015 as h
from kdistill.runs import execute

out = Path("/work/main/runs/hinton2015-paper")
the_plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
h.reuse_teacher(Path("/work/main/runs/paper-teacher"), out / h.teacher_key(), the_plan.runs[h.teacher_key()])
for key in sys.argv[1:]:
    if (out / key).exists():
        continue
    m = execute(the_plan.runs[key], out / key, progress=False, argv=[sys.executable, __file__, key])
    print(key, m["test"]["errors"], m["train_seconds"], flush=True)
