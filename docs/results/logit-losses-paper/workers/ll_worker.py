"""Background worker (issue 13): runs the logit-losses paper profile into
runs/logit-losses-paper, two workers side by side (a flock per run folder). Stage 1 (teacher,
alone, grids) in plan order, keys matching the regexes first; a dataset's finals start as soon
as its own grid is done (its choice depends on its grid only, so it equals reproduce's).
Usage: ll_worker.py REGEX [REGEX ...]   (kdistill imported from PYTHONPATH, a frozen worktree)"""
import fcntl, os, re, sys, time
from dataclasses import replace
from pathlib import Path
import torch
from kdistill.experiments import logit_losses as ll
from kdistill.experiments.common import check_same_run
from kdistill.runs import is_complete, run_or_resume

torch.set_num_threads(int(os.environ.get("WORKER_THREADS", "1")))
out = Path("/work/main/runs/logit-losses-paper").resolve()
DATA, SEEDS = "/work/shared/data", 3
profile = ll.PROFILES["paper"]
print("kdistill from", ll.__file__, flush=True)

CHOICES: dict = {}  # per dataset, once its grid is done (the choice is deterministic)

def runs_now() -> dict:
    stage1 = ll.plan(profile, out, DATA, SEEDS).runs
    runs = dict(stage1)
    for d in profile.datasets:
        only = replace(profile, datasets=(d,))
        keys = [k for k in ll.plan(only, out, DATA, SEEDS).runs]
        if d not in CHOICES and all(is_complete(out / k) for k in keys):
            CHOICES[d] = ll.choose(ll.plan(only, out, DATA, SEEDS), out)
            print("chosen", d, {k: v["label"] for k, v in CHOICES[d][d].items()}, flush=True)
        if d in CHOICES:
            runs.update(ll.plan(only, out, DATA, SEEDS, choices=CHOICES[d]).runs)
    first = [k for k in runs if any(re.search(p, k) for p in sys.argv[1:])]
    return {k: runs[k] for k in first + [k for k in runs if k not in first]}

while True:
    waiting = ran = False
    for key, spec in runs_now().items():
        folder = out / key
        if is_complete(folder):
            continue
        if not all(is_complete(t) for t in spec.teachers):
            waiting = True
            continue
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".worker-lock", "w")
        try:  # held while this worker runs it; released by the kernel if the worker dies
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting = True
            continue
        if is_complete(folder):
            continue
        t0 = time.perf_counter()
        m, how = run_or_resume(spec, folder, same_run=check_same_run, progress=False,
                               argv=[sys.executable, __file__, key])
        print(time.strftime("%H:%M:%S"), key, how, m["test"]["errors"],
              f"{time.perf_counter()-t0:.0f}s", flush=True)
        ran = True
        lock.close()
        break  # re-plan: a dataset's finals may have become available
    if not waiting and not ran:
        break
    if not ran:
        time.sleep(20)
