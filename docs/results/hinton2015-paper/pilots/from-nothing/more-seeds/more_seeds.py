"""Issue 10: the main table's distilled student (800-800, T = 20) at seeds 3-5, from a given
teacher run, with the paper profile's own RunSpec (h.plan at 6 seeds): is the from-nothing
teacher's 76.0 (83, 77, 68) a seed fluke? Usage: more_seeds.py TEACHER_RUN OUT"""
import shutil, sys
from pathlib import Path
import kdistill  # noqa
from kdistill.experiments import hinton2015 as h
from kdistill.runs import run_or_resume

teacher, out = Path(sys.argv[1]), Path(sys.argv[2])
if not (out / h.teacher_key()).exists():
    shutil.copytree(teacher, out / h.teacher_key(), ignore=shutil.ignore_patterns("checkpoint*"))
plan = h.plan(h.PROFILES["paper"], out, seeds=6)
for seed in (3, 4, 5):
    key = h.distill_key(800, 20.0, seed)
    metrics, how = run_or_resume(plan.runs[key], out / key, progress=False)
    print(key, metrics["test"]["errors"], how, flush=True)
