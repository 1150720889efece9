"""What each speed lever buys: A/B timings of one distillation epoch, interleaved in one run.

Usage::

    python benchmarks/levers.py [--examples 6000] [--repeats 3]

Each lever is timed against its baseline in alternation (A, B, A, B, ...) so that a change in
the machine's load hits both sides; the table gives the median seconds of each side and their
ratio. Levers: the fused SGD kernel (kdistill's default) against the per-tensor SGD, one torch
thread against torch's default, and bf16 autocast against fp32. The student is the 800-800 MLP
distilled from cached teacher logits (random logits: the cost does not depend on their values).
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY; kdistill/_openmp.py)

# isort: on
import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from unittest import mock

import torch

import kdistill.train as train_module
from kdistill.data import Split, load_dataset, resolve_data_dir
from kdistill.models import build_model
from kdistill.reports import format_table
from kdistill.train import TrainConfig, fit


def epoch_seconds(split: Split, logits: torch.Tensor, config: TrainConfig) -> float:
    """Seconds of one cached-logits distillation epoch of a fresh 800-800 student."""
    torch.manual_seed(1)
    student = build_model("mlp:800x800", tuple(split.images.shape[1:]), 10)
    result = fit(student, split, config, teacher_logits=logits, progress=False)
    return result.history[-1]["seconds"]


@contextmanager
def unfused_sgd():
    """kdistill's optimizer as it was before: SGD's per-tensor (for-loop) implementation."""
    original = torch.optim.SGD

    def sgd(*args, **kwargs):
        kwargs["fused"] = None
        return original(*args, **kwargs)

    with mock.patch.object(train_module.torch.optim, "SGD", sgd):
        yield


@contextmanager
def threads(count: int):
    """Run with ``count`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def nothing():
    yield


def ab(
    run: Callable[[TrainConfig], float],
    lever: tuple[TrainConfig, Callable],
    baseline: tuple[TrainConfig, Callable],
    repeats: int,
) -> tuple[float, float]:
    """Median seconds of ``run`` with the lever and with the baseline, interleaved.

    Each side is a config and a context manager factory to run it in.
    """
    sides = (lever, baseline)
    times: tuple[list[float], list[float]] = ([], [])
    for config, context in sides:
        with context():
            run(config)  # warm-up
    for _ in range(repeats):
        for seconds, (config, context) in zip(times, sides, strict=True):
            with context():
                seconds.append(run(config))
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> int:
    """Time each lever against its baseline and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch threads for the non-thread levers")
    parser.add_argument("--one-epoch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.examples
    root = resolve_data_dir(None)
    if (root / "mnist").is_dir():
        data = load_dataset("mnist", root).train
        split = Split(data.images[:n], data.labels[:n])
    else:
        split = Split(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)))
    logits = torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    fp32 = TrainConfig(epochs=1, batch_size=args.batch_size, loss_args={"temperature": 20.0})
    if args.one_epoch:  # child of the wait-policy lever
        print(epoch_seconds(split, logits, fp32))
        return 0
    bf16 = TrainConfig(
        epochs=1, batch_size=args.batch_size, loss_args={"temperature": 20.0}, bf16=True
    )
    print(
        f"{n} examples, batch {args.batch_size}, load {os.getloadavg()}, "
        f"{default_threads} threads by default"
    )
    rows = []
    cases = [
        ("fused SGD vs per-tensor SGD", fp32, fp32, nothing, unfused_sgd),
        (
            f"1 thread vs {default_threads}",
            fp32,
            fp32,
            lambda: threads(1),
            lambda: threads(default_threads),
        ),
        ("bf16 autocast vs fp32", bf16, fp32, nothing, nothing),
    ]
    for name, config, base_config, lever, baseline in cases:
        fast, slow = ab(
            lambda c: epoch_seconds(split, logits, c),
            (config, lever),
            (base_config, baseline),
            args.repeats,
        )
        rows.append(
            {
                "lever": name,
                "with_s": round(fast, 3),
                "without_s": round(slow, 3),
                "speedup": round(slow / fast, 2),
            }
        )
    # OMP_WAIT_POLICY is read when torch loads, so each side is a fresh process.
    child = [
        sys.executable,
        __file__,
        "--one-epoch",
        "--examples",
        str(n),
        "--batch-size",
        str(args.batch_size),
    ]

    def in_process(policy: str) -> float:
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run(child, env=env, check=True, capture_output=True, text=True)
        return float(out.stdout.split()[-1])

    times: dict[str, list[float]] = {"PASSIVE": [], "ACTIVE": []}
    for _ in range(args.repeats):
        for policy, seconds in times.items():
            seconds.append(in_process(policy))
    fast, slow = statistics.median(times["PASSIVE"]), statistics.median(times["ACTIVE"])
    rows.append(
        {
            "lever": f"OMP_WAIT_POLICY passive vs active ({default_threads} threads)",
            "with_s": round(fast, 3),
            "without_s": round(slow, 3),
            "speedup": round(slow / fast, 2),
        }
    )
    print(format_table(rows))
    print(f"load at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
