"""Runs of a plan made several at a time, each in its own worker process (``reproduce --jobs``).

On a few CPU cores, runs of one thread each side by side finish sooner than the same runs one
after another on every core: a student's step is small matrix products and element-wise kernels
that do not split well across threads. A run starts once the runs of the plan it distils from
(its teachers) are finished, so while a teacher trains the other jobs make the runs that need
no teacher (students alone, ensemble members). Each run is resumable as in a plan run one at a
time, and its folder is locked while it trains (:class:`kdistill.checkpoint.FolderLock`).

Worker processes are started with ``spawn`` (forking a process whose OpenMP threads already ran
can hang). A run's float results can differ in their last bits from the same run on another
number of threads; ``meta.json`` records ``torch_threads``.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kdistill.runs import RunSpec, is_complete, run_or_resume

# (number in the plan, key, spec) of each run still to make
Pending = list[tuple[int, str, RunSpec]]


def threads_per_job(jobs: int) -> int:
    """The torch threads each of ``jobs`` worker processes uses: this process's, shared out."""
    return max(1, torch.get_num_threads() // jobs)


def run_in_parallel(
    pending: Pending,
    out: Path,
    jobs: int,
    *,
    total: int,
    log: Callable[[str], None],
    argv: list[str],
    same_run: Callable[[Path, RunSpec], None],
) -> None:
    """Make the ``pending`` runs into ``out``, ``jobs`` at a time, logging one line per run.

    A run waits for those of its teachers that are pending or running. The first run to fail
    stops the others (their folders keep their checkpoints, so the next call resumes them) and
    its error is raised here.
    """
    for item in [item for item in pending if is_complete(out / item[1])]:
        number, key, spec = item  # checked here: no worker needed
        pending.remove(item)
        metrics, state = run_or_resume(spec, out / key, same_run=same_run, argv=argv)
        log(finished_line(number, total, key, metrics, state, 0.0))
    threads = threads_per_job(jobs)
    finished: queue.Queue = queue.Queue()
    running: dict[str, int] = {}
    context = multiprocessing.get_context("spawn")
    # leaving the block terminates the pool: after an error, the runs still going stop there
    # and resume from their last checkpoint next time
    with context.Pool(jobs, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        while pending or running:
            for item in _ready(pending, running, out, jobs):
                number, key, spec = item
                pending.remove(item)
                running[key] = number
                log(f"[{number}/{total}] {key}: started ({threads} thread(s))")
                pool.apply_async(
                    _make_run,
                    (spec, out / key, argv, same_run),
                    callback=lambda result, key=key: finished.put((key, result, None)),
                    error_callback=lambda error, key=key: finished.put((key, None, error)),
                )
            if not running:
                raise AssertionError(f"runs wait for teachers never made: {pending}")
            key, result, error = finished.get()
            number = running.pop(key)
            if error is not None:
                raise error
            log(finished_line(number, total, key, *result))


def _ready(pending: Pending, running: dict[str, int], out: Path, jobs: int) -> Pending:
    """The pending runs that may start now, in plan order, as many as free jobs allow."""
    unfinished = {str(out / key) for _, key, _ in pending} | {str(out / key) for key in running}
    ready = [item for item in pending if not unfinished & set(map(str, item[2].teachers))]
    return ready[: jobs - len(running)]


def _make_run(
    spec: RunSpec, folder: Path, argv: list[str], same_run: Callable[[Path, RunSpec], None]
) -> tuple[dict, str, float]:
    """In a worker process: one run, made, resumed or found done."""
    started = time.perf_counter()
    metrics, state = run_or_resume(spec, folder, same_run=same_run, progress=False, argv=argv)
    return metrics, state, time.perf_counter() - started


def finished_line(
    number: int, total: int, key: str, metrics: dict, state: str, seconds: float
) -> str:
    """The line logged for a run once it is made (or found done)."""
    took = f"{seconds:.0f} s"
    how = {"done": "already done", "resumed": f"resumed, {took}", "new": took}[state]
    test = metrics["test"]
    return (
        f"[{number}/{total}] {key}: {test['errors']} test errors of {test['examples']} "
        f"({metrics['epochs_run']} epochs, {how})"
    )
