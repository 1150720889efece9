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
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Set
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from kdistill.errors import KDistillError
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
    running: dict[Future, tuple[int, str]] = {}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs, context, initializer=_start_worker, initargs=(threads, os.getpid())
    )
    with pool:  # leaving it waits for the workers to exit
        try:
            while pending or running:
                for item in _ready(pending, {key for _, key in running.values()}, out, jobs):
                    number, key, spec = item
                    pending.remove(item)
                    log(f"[{number}/{total}] {key}: started ({threads} thread(s))")
                    future = pool.submit(_make_run, spec, out / key, argv, same_run)
                    running[future] = (number, key)
                if not running:
                    raise AssertionError(f"runs wait for teachers never made: {pending}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    number, key = running.pop(future)
                    log(finished_line(number, total, key, *_result(future)))
        except BaseException:
            _kill_workers(pool)  # the runs still going stop, and resume next time
            raise


def _start_worker(threads: int, parent: int) -> None:
    """In a new worker: its share of the threads, and a watch that ends it with its parent.

    A parent killed by a signal (SIGTERM, SIGKILL) runs no clean-up, and a worker in the middle
    of a run would go on training for hours, holding its run's folder lock. The run keeps its
    last checkpoint, so the next call resumes it.
    """
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this process once ``parent`` is no longer its parent (it died; we were adopted)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _result(future: Future) -> tuple[dict, str, float]:
    """A finished job's result, or its error (a worker that died: said how to avoid it)."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise KDistillError(
            "a worker process of --jobs died (killed, out of memory, or started from a Python "
            'script without `if __name__ == "__main__":` around the call: workers are spawned '
            "and import the script again); the runs resume where they stopped"
        ) from None


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the runs not started and kill the workers (each run keeps its checkpoint)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown drops them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()


def ready_runs(
    pending: list[str], running: Collection[str], teachers: Mapping[str, Set[str]], jobs: int
) -> list[str]:
    """The pending runs that may start now: in plan order, those none of whose ``teachers`` is
    pending or running, as many as the ``jobs`` not ``running`` allow. Runs are named by any
    key (``benchmarks/reproduce_cost.py`` simulates the pool with this rule)."""
    unfinished = set(pending) | set(running)
    ready = [run for run in pending if not unfinished & teachers[run]]
    return ready[: jobs - len(running)]


def _ready(pending: Pending, running: set[str], out: Path, jobs: int) -> Pending:
    """The pending runs that may start now, as :func:`ready_runs` says, by folder."""
    by_folder = {str(out / item[1]): item for item in pending}
    teachers = {folder: set(map(str, item[2].teachers)) for folder, item in by_folder.items()}
    running_folders = [str(out / key) for key in running]
    return [by_folder[f] for f in ready_runs(list(by_folder), running_folders, teachers, jobs)]


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
