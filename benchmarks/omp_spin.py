"""OpenMP's spin before sleeping (``GOMP_SPINCOUNT``): step times on idle and on shared cores.

Usage::

    python benchmarks/omp_spin.py                      # ~4 minutes on 2 cores
    python benchmarks/omp_spin.py --spins 0 1000 --busy 0 1 --repeats 1

kdistill makes OpenMP threads sleep between parallel regions (``OMP_WAIT_POLICY=PASSIVE``,
kdistill/_openmp.py), which keeps shared cores usable; libgomp's ``GOMP_SPINCOUNT`` lets a
thread spin that many times (about 100 per microsecond) before it sleeps. Each cell runs in a
fresh process (libgomp reads the variable when torch loads it), 2 torch threads: the best of
5 x 40 steps of ``benchmarks/step_profile.py``'s paper-teacher step and cached distillation step
(batch 128), and each step's matrix-product roofline measured in the same process (``ratio`` =
roofline time / step time, as in ``benchmarks/throughput.py``). ``busy`` starts that many
``while True: pass`` processes on the same cores for the cell. Settings are interleaved, and
each cell is repeated ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def child() -> None:
    """Measure both steps in this process and print them as JSON."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import step_profile  # first: it imports kdistill before torch (OMP_WAIT_POLICY)
    import throughput
    import torch

    torch.set_num_threads(2)
    result = {}
    for name, make, spec in (
        ("teacher", step_profile.teacher_step, throughput.TEACHER_SPEC),
        ("cached", step_profile.cached_distillation_step, throughput.STUDENT_SPEC),
    ):
        shapes = throughput.linear_shapes(throughput.seeded_model(spec))
        step = make()
        for _ in range(20):  # warm-up
            step()
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(40):
                step()
            best = min(best, (time.perf_counter() - started) / 40)
        roof = throughput.roofline_step_seconds(shapes, 128, True)
        result[name] = {"step_ms": round(1e3 * best, 2), "ratio": round(roof / best, 3)}
    print(json.dumps(result))


def cell(spins: int, busy: int) -> dict:
    """One fresh measuring process at ``GOMP_SPINCOUNT=spins`` beside ``busy`` busy loops."""
    hogs = [subprocess.Popen(BUSY_LOOP) for _ in range(busy)]
    try:
        env = {**os.environ, "GOMP_SPINCOUNT": str(spins)}
        done = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    """Run every cell and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spins", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print("| busy processes | GOMP_SPINCOUNT | teacher ms (ratio) | cached ms (ratio) |")
    print("|---:|---:|---|---|")
    for busy in args.busy:
        for _ in range(args.repeats):
            for spins in args.spins:
                r = cell(spins, busy)
                t, c = r["teacher"], r["cached"]
                print(
                    f"| {busy} | {spins} | {t['step_ms']} ({t['ratio']}) "
                    f"| {c['step_ms']} ({c['ratio']}) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
