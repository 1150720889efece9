"""Fixed cost of a run (issue 15): the seconds a `kdistill distill` run spends beyond its epochs.

Usage::

    python benchmarks/fixed_cost.py --teacher docs/results/paper-teacher   # MNIST, ~1 minute

Each row runs in a fresh Python process, as a user's command does, and is the fastest of
``--repeats`` tries (on a shared machine the best time is the stable estimate):

1. ``import``: ``import kdistill.cli`` (torch and kdistill's modules);
2. ``import + data``: the same, then the dataset decoded from its gzip IDX files;
3. ``train, 1 epoch`` and ``distill, 1 epoch``: the whole command; ``fixed`` = its wall time
   minus the epoch's own ``seconds`` in history.csv (the training steps). For ``distill`` this
   includes loading the teacher and computing its logits on every training example once.

The machine's load average is printed beside the figures. Real MNIST is read from
``KDISTILL_DATA`` (or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall_seconds(argv: list[str], env: dict) -> float:
    """Wall time of one process running ``argv`` (which must succeed)."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def epoch_seconds(run: Path) -> float:
    """The training seconds of the run's only epoch, as history.csv records them."""
    with open(run / "history.csv", newline="") as handle:
        return float(next(csv.DictReader(handle))["seconds"])


def best_of(repeats: int, measure) -> tuple[float, float]:
    """The fastest (wall, fixed) of ``repeats`` calls of ``measure()``."""
    return min((measure() for _ in range(repeats)), key=lambda pair: pair[0])


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a finished MNIST teacher run")
    parser.add_argument("--data-dir", default=os.environ.get("KDISTILL_DATA"))
    parser.add_argument("--student", default="mlp:800x800")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = [sys.executable, "-c"]
    decode = "from kdistill.runs import cached_dataset; cached_dataset('mnist', {!r})"
    rows = []
    for name, code in (
        ("import", "import kdistill.cli"),
        ("import + data", "import kdistill.cli; " + decode.format(args.data_dir)),
    ):
        wall, _ = best_of(args.repeats, lambda code=code: (wall_seconds([*python, code], env), 0))
        rows.append((name, wall, None))
    for name, command in (
        ("train, 1 epoch", ["train"]),
        ("distill, 1 epoch", ["distill", "--teacher", args.teacher]),
    ):

        def run(command=command) -> tuple[float, float]:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run"
                argv = [sys.executable, "-m", "kdistill", *command, "--dataset", "mnist"]
                argv += ["--data-dir", args.data_dir, "--model", args.student, "--epochs", "1"]
                wall = wall_seconds([*argv, "--out", str(out), "--no-progress"], env)
                return wall, wall - epoch_seconds(out)

        wall, fixed = best_of(args.repeats, run)
        rows.append((name, wall, fixed))
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print("| row | wall s | fixed s (wall - epoch) |\n|---|---:|---:|")
    for name, wall, fixed in rows:
        print(f"| {name} | {wall:.2f} | {'' if fixed is None else f'{fixed:.2f}'} |")


if __name__ == "__main__":
    main()
