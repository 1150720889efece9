"""Cost of each logit-distillation loss next to the ``hinton`` loss, alone and in a training step.

Usage::

    python benchmarks/losses.py            # about two minutes on one busy core
    python benchmarks/losses.py --quick    # seconds; a smoke test (tests/test_logit_losses.py)

Two timings per loss, both forward + backward, float32 on the CPU, one thread by default:

- ``loss``: the loss alone on a (128, 10) batch of student and teacher logits (the gradient
  with respect to the student's logits), best of several trials of many repetitions;
- ``step``: one whole distillation step of an 800-800 MLP student on 784-pixel inputs, batch
  128, 10 classes, teacher logits cached (as ``fit`` does when the transfer set is fixed):
  student forward, loss, backward, SGD update.

Each is printed in microseconds and as a ratio to the ``hinton`` row (1.00 = as cheap as
Hinton's KD loss); the last column is the loss's extra cost over ``hinton``'s (alone) as a
share of a ``hinton`` step, the steadier estimate of what choosing it costs in training.
Losses are built with ``make_loss`` and called as the training loop calls them (the sum of
their terms). Trials alternate between the losses, so that a change in the machine's load
affects all of them alike; each figure is the best trial. ``--json`` writes the table.
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY; kdistill/_openmp.py)

# isort: on
import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor

from kdistill.losses import make_loss, sum_terms
from kdistill.models import build_model

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]

# name -> (registered loss, arguments): the losses as the training loop builds and calls them
LOSSES: dict[str, tuple[str, dict]] = {
    "hinton": ("hinton", {"temperature": 4.0, "alpha": 0.9}),
    "hinton standardize": ("hinton", {"temperature": 4.0, "alpha": 0.9, "standardize": True}),
    "reverse-kl": ("reverse-kl", {"temperature": 4.0, "alpha": 0.9}),
    "jsd": ("jsd", {"temperature": 4.0, "alpha": 0.9}),
    "tv": ("tv", {"temperature": 4.0, "alpha": 0.9}),
    "skew-kl": ("skew-kl", {"temperature": 4.0, "alpha": 0.9}),
    "skew-reverse-kl": ("skew-reverse-kl", {"temperature": 4.0, "alpha": 0.9}),
    "dkd": ("dkd", {"warmup": 0}),
    "dkd standardize": ("dkd", {"warmup": 0, "standardize": True}),
    "dist": ("dist", {}),
}


def _as_function(name: str, arguments: dict) -> LossFn:
    objective = make_loss(name, **arguments)
    return lambda z, v, y: sum_terms(objective(z, v, y))


def _mean_time(run: Callable[[], None], repeats: int) -> float:
    """Seconds per call, the mean over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def loss_alone(loss: LossFn, batch: int = 128, classes: int = 10) -> Callable[[], None]:
    """Forward + backward of the loss alone on ``(batch, classes)`` float32 logits."""
    g = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(batch, classes, generator=g)).requires_grad_(True)
    v = 3 * torch.randn(batch, classes, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)

    def run() -> None:
        z.grad = None
        loss(z, v, y).backward()

    return run


def distillation_step(loss: LossFn, batch: int = 128) -> Callable[[], None]:
    """One SGD step of an 800-800 MLP student on a batch of 784-pixel inputs, cached teacher."""
    torch.manual_seed(0)
    student = build_model("mlp:800x800", (1, 28, 28), 10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 1, 28, 28)
    v = 3 * torch.randn(batch, 10)
    y = torch.randint(0, 10, (batch,))

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(student(x), v, y).backward()
        optimizer.step()

    return run


def best_interleaved(runs: dict[str, Callable[[], None]], repeats: int, trials: int) -> dict:
    """Best seconds per call of each run; each trial times every run once, in turn."""
    for run in runs.values():  # warm-up
        _mean_time(run, max(1, repeats // 10))
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(trials):
        for name, run in runs.items():
            best[name] = min(best[name], _mean_time(run, repeats))
    return best


def main(argv: list[str] | None = None) -> int:
    """Time every loss, print the table (and write it as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loss_repeats, step_repeats, trials = (10, 2, 1) if args.quick else (300, 10, 7)

    functions = {label: _as_function(*spec) for label, spec in LOSSES.items()}
    alone = best_interleaved({k: loss_alone(f) for k, f in functions.items()}, loss_repeats, trials)
    step = best_interleaved(
        {k: distillation_step(f) for k, f in functions.items()}, step_repeats, trials
    )
    rows = [{"loss": k, "loss_us": alone[k] * 1e6, "step_us": step[k] * 1e6} for k in functions]
    base = rows[0]
    for row in rows:
        row["loss_ratio"] = row["loss_us"] / base["loss_us"]
        row["step_ratio"] = row["step_us"] / base["step_us"]
        # the loss's extra cost over hinton's as a share of a step: steadier than step_ratio,
        # whose two steps are timed apart and differ by the machine's load
        row["extra_pct_of_step"] = 100 * (row["loss_us"] - base["loss_us"]) / base["step_us"]

    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, CPU")
    print(
        f"{'loss':<20}{'alone (us)':>11}{'x hinton':>10}{'step (us)':>11}{'x hinton':>10}"
        f"{'extra, % of step':>18}"
    )
    for r in rows:
        print(
            f"{r['loss']:<20}{r['loss_us']:>11.0f}{r['loss_ratio']:>10.2f}"
            f"{r['step_us']:>11.0f}{r['step_ratio']:>10.2f}{r['extra_pct_of_step']:>17.1f}%"
        )
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
