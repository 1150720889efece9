"""Background worker (issue 10): runs the `paper` profile (SGD + clip students, a3b9b73) into
runs/hinton2015-paper-sgd from the committed teacher, one thread; runs whose keys match the
regexes first, then the rest in plan order; a flock per run folder, so two workers share it.
Usage: paper3_worker.py REGEX [REGEX ...]   (kdistill imported from PYTHONPATH, a frozen worktree)"""
import fcntl, os, re, sys, time
from pathlib import Path
import torch
from kdistill.experiments import hinton2015 as h
from kdistill.experiments.common import check_same_run
from kdistill.runs import is_complete, run_or_resume

torch.set_num_threads(int(os.environ.get("WORKER_THREADS", "1")))
out = Path("/work/main/runs/hinton2015-paper-sgd")
plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
h.reuse_teacher(Path("/work/main/docs/results/paper-teacher"), out / h.teacher_key(), plan.runs[h.teacher_key()])
print("kdistill from", h.__file__, flush=True)
first = [k for k in plan.runs if any(re.search(p, k) for p in sys.argv[1:])]
order = first + [k for k in plan.runs if k not in first]
while True:
    waiting = ran = False
    for key in order:
        spec, folder = plan.runs[key], out / key
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
        break  # start again from the top of the priority order
    if not waiting and not ran:
        break
    if not ran:
        time.sleep(20)
