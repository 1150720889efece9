"""Fixed cost of a run (issue 15): the seconds a `kdistill distill` run spends beyond its epochs.

Usage::

    python benchmarks/fixed_cost.py --teacher docs/results/paper-teacher   # MNIST, ~1 minute

Each row runs in a fresh Python process, as a user's command does, and is the fastest of
``--repeats`` tries (on a shared machine the best time is the stable estimate):

1. ``torch alone``: the floor under any PyTorch training script: ``import torch``, the
   student built as an ``nn.Sequential``, one ``torch.optim.SGD`` step on one batch (its first
   step imports ``torch._dynamo``), no data;
2. ``import``: ``import kdistill.cli`` (torch and kdistill's modules);
3. ``import + data``: the same, then the dataset decoded from its gzip IDX files;
4. ``train, 1 epoch`` and ``distill, 1 epoch``: the whole command; ``fixed`` = its wall time
   minus the epoch's own ``seconds`` in history.csv (the training steps). For ``distill`` this
   includes loading the teacher and computing its logits on every training example once;
5. ``distill from a logits file``: the same from a ``kdistill teacher-logits`` file (written
   once beforehand, untimed), as a sweep's cells can.

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


# The floor: what any PyTorch script pays before its first step (the --student's widths).
TORCH_ALONE = """
import torch
widths = [784, *{widths}, 10]
layers = []
for a, b in zip(widths, widths[1:]):
    layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
model = torch.nn.Sequential(*layers[:-1])
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
torch.nn.functional.cross_entropy(model(x), y).backward()
optimizer.step()
"""


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a finished MNIST teacher run")
    parser.add_argument("--data-dir", default=os.environ.get("KDISTILL_DATA"))
    parser.add_argument("--student", default="mlp:800x800", help="an MLP spec")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = [sys.executable, "-c"]
    decode = "from kdistill.runs import cached_dataset; cached_dataset('mnist', {!r})"
    rows = []
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import linear_shapes, seeded_model  # (torch, in this untimed process)

    shapes = linear_shapes(seeded_model(args.student))
    widths = [fan_out for _, fan_out in shapes[:-1]]  # the hidden layers
    for name, code in (
        ("torch alone: import, one SGD step", TORCH_ALONE.format(widths=widths)),
        ("import", "import kdistill.cli"),
        ("import + data", "import kdistill.cli; " + decode.format(args.data_dir)),
    ):
        wall, _ = best_of(args.repeats, lambda code=code: (wall_seconds([*python, code], env), 0))
        rows.append((name, wall, None))
    logits_dir = tempfile.TemporaryDirectory()
    logits = str(Path(logits_dir.name) / "teacher.logits")
    write = [sys.executable, "-m", "kdistill", "teacher-logits", args.teacher, "--dataset"]
    command = [*write, "mnist", "--data-dir", args.data_dir, "--out", logits]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)
    for name, command in (
        ("train, 1 epoch", ["train"]),
        ("distill, 1 epoch", ["distill", "--teacher", args.teacher]),
        ("distill from a logits file, 1 epoch", ["distill", "--teacher-logits", logits]),
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
    logits_dir.cleanup()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print("| row | wall s | fixed s (wall - epoch) |\n|---|---:|---:|")
    for name, wall, fixed in rows:
        print(f"| {name} | {wall:.2f} | {'' if fixed is None else f'{fixed:.2f}'} |")


if __name__ == "__main__":
    main()
