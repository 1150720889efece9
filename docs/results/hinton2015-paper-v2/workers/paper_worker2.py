"""Background worker (issue 10): runs the paper profile's runs whose keys match the given
regexes, in plan order, into runs/hinton2015-paper; finished runs are skipped, killed ones resume,
a run whose teachers are not finished yet waits for them (another worker is making them).
Usage: paper_worker2.py REGEX [REGEX ...]   (kdistill imported from PYTHONPATH, a frozen worktree)"""
import fcntl, re, sys, time
from pathlib import Path
import torch
from kdistill.experiments import hinton2015 as h
from kdistill.checkpoint import has_checkpoint
from kdistill.runs import execute, is_complete

torch.set_num_threads(1)
out = Path("/work/main/runs/hinton2015-paper")
plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
print("kdistill from", h.__file__, flush=True)
wanted = [k for k in plan.runs if any(re.search(p, k) for p in sys.argv[1:])]
while True:
    waiting = ran = False
    for key in wanted:
        spec, folder = plan.runs[key], out / key
        if is_complete(folder):
            continue
        if not all(is_complete(t) for t in spec.teachers):
            waiting = True
            continue
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".worker-lock", "w")
        try:  # held while this worker runs it; released by the kernel if the worker is killed
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting = True
            continue  # another worker is running it
        if is_complete(folder):
            continue
        resume = has_checkpoint(folder)
        if resume:
            h.check_same_run(folder, spec)
        t0 = time.perf_counter()
        m = execute(spec, folder, resume=resume, progress=False, argv=[sys.executable, __file__, key])
        print(time.strftime("%H:%M:%S"), key, m["test"]["errors"], f"{time.perf_counter()-t0:.0f}s", flush=True)
        ran = True
        lock.close()
    if not waiting:
        break
    if not ran:
        time.sleep(20)
