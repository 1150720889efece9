"""Distillation on a jittered transfer set: the teacher online on every batch, or its views once.

Usage::

    python benchmarks/jitter_views.py              # MNIST (KDISTILL_DATA), ~4 minutes on 2 cores
    python benchmarks/jitter_views.py --quick      # seconds; a smoke test

Times whole ``fit`` runs of the 800-800 student distilled at T = 20 with +-2 px jitter, from the
paper's 1200-1200 teacher and from an ensemble of ten 300-300 members (untrained weights: a
step's time does not depend on their values), once with the teacher online
(``cache_jitter_views=False``) and once with its 25 views computed at the start (the default
where the run has >= 25 epochs), interleaved. Prints each run's wall time, the ratio, and the
test errors of both (equal up to float rounding of the teacher's batched passes).
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY)

# isort: on
import argparse
import os
import time
from dataclasses import replace

import torch

from kdistill import batches
from kdistill.data import Split, load_dataset, stratified_fraction
from kdistill.models import build_model
from kdistill.reports import format_table
from kdistill.train import TrainConfig, evaluate, fit

TEACHERS = {  # name -> (model spec, members)
    "teacher 1200-1200": ("mlp:1200x1200,dropout=0.5,input_dropout=0.2", 1),
    "ensemble of 10 x 300-300": ("mlp:300x300", 10),
}


def teacher_of(spec: str, members: int) -> torch.nn.Module | list[torch.nn.Module]:
    """Seeded models of ``spec`` (eval mode): one, or a list of ``members``."""
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build_model(spec, (1, 28, 28), 10).eval())
    return models[0] if members == 1 else models


def timed_run(train: Split, test: Split, teacher, config: TrainConfig) -> tuple[float, int]:
    """Wall seconds of one whole ``fit`` (set-up included) and the student's test errors."""
    batches.forget_views()  # each run computes its views, as a lone `kdistill distill` does
    torch.manual_seed(0)
    student = build_model("mlp:800x800", (1, 28, 28), 10)
    started = time.perf_counter()
    fit(student, train, config, teacher=teacher, progress=False)
    return time.perf_counter() - started, evaluate(student, test)["errors"]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison, print its table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--examples", type=int, default=4000, help="transfer-set size")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.epochs, args.repeats = 300, 25, 1
    data_dir = os.environ.get("KDISTILL_DATA")
    data = load_dataset("mnist", data_dir) if data_dir else None
    if data is None:  # random images of MNIST's shape: the timing is the same
        images = torch.rand(args.examples + 1000, 1, 28, 28)
        labels = torch.randint(0, 10, (args.examples + 1000,))
        train, test = Split(images[1000:], labels[1000:]), Split(images[:1000], labels[:1000])
    else:
        train = stratified_fraction(data.train, args.examples / len(data.train), seed=0)
        test = data.test
    config = TrainConfig(
        epochs=args.epochs, jitter=2, lr=0.01, loss_args={"temperature": 20.0}, device="cpu"
    )
    print(
        f"jittered distillation: {len(train)} examples, {args.epochs} epochs, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for name, (spec, members) in TEACHERS.items():
        teacher = teacher_of(spec, members)
        times: dict[bool, list[float]] = {True: [], False: []}
        errors: dict[bool, int] = {}
        for _ in range(args.repeats):
            for views in (False, True):
                seconds, errors[views] = timed_run(
                    train, test, teacher, replace(config, cache_jitter_views=views)
                )
                times[views].append(seconds)
        online, cached = min(times[False]), min(times[True])
        rows.append(
            {
                "teacher": name,
                "online_s": round(online, 2),
                "views_once_s": round(cached, 2),
                "speed-up": round(online / cached, 2),
                "test_errors_online": errors[False],
                "test_errors_views": errors[True],
            }
        )
    print(format_table(rows))
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return rows


if __name__ == "__main__":
    main()
