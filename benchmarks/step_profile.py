"""Where a training step's time goes: the paper teacher's step and the cached distillation step.

Usage::

    python benchmarks/step_profile.py                 # one thread, ~1 minute
    python benchmarks/step_profile.py --threads 2
    python benchmarks/step_profile.py --bf16          # forwards under bf16 autocast
    python benchmarks/step_profile.py --threads 2 --ops 12   # and the 12 costliest ops

Profiles 50 steps of each at batch 128 with ``torch.profiler`` on random inputs (the time of a
step does not depend on the pixel values) and prints each step's time shares: matrix products,
dropout masks, the optimizer, the max-norm pass and the rest. The steps are those of
:func:`kdistill.train.fit` written out: the teacher (``mlp:1200x1200,dropout=0.5,
input_dropout=0.2``, 2-pixel jitter, max-norm 3.873, SGD with Nesterov momentum, fused) and the
800-800 student on the ``hinton`` loss at T = 20 with its teacher's logits given (cached).
Issue 15 asks for >= 0.75 (teacher) and >= 0.8 (cached) of the matmul roofline; the matrix
products' share is an upper bound of that ratio on the same thread count.
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY)

# isort: on
import argparse
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from kdistill.data import jitter
from kdistill.losses import make_loss
from kdistill.models import build_model, max_norm_

GROUPS = {  # profiler op name -> what it is
    "aten::mm": "matrix products",
    "aten::addmm": "matrix products",
    "aten::bernoulli_": "dropout masks",
    "aten::uniform_": "dropout masks",
    "aten::_fused_sgd_": "optimizer",
    "aten::linalg_vector_norm": "max-norm",
    "aten::copy_": "casts and copies",
}


def teacher_step(bf16: bool = False) -> Callable[[], None]:
    """One step of the paper teacher on a random batch of 128."""
    model = build_model("mlp:1200x1200,dropout=0.5,input_dropout=0.2", (1, 28, 28), 10)
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    images, labels = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(jitter(images, 2))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()
        max_norm_(model, 3.873)

    return step


def cached_distillation_step(bf16: bool = False) -> Callable[[], None]:
    """One step of the 800-800 student on the hinton loss, the teacher's logits given."""
    model = build_model("mlp:800x800", (1, 28, 28), 10)
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    images, labels = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    teacher_logits = torch.randn(128, 10) * 5
    loss_fn = make_loss("hinton", temperature=20.0, alpha=0.5)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = sum(loss_fn(logits.float(), teacher_logits, labels).values())
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    return step


STEPS = 50  # profiled per step kind, after 10 of warm-up


def profiled_ops(step: Callable[[], None], steps: int = STEPS) -> list:
    """``torch.profiler``'s per-op averages over ``steps`` steps, after 10 of warm-up."""
    for _ in range(10):  # warm-up
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return list(prof.key_averages())


def top_ops(events: list, count: int, steps: int) -> list[str]:
    """The ``count`` ops of most self time among ``events`` (:func:`profiled_ops` over
    ``steps`` steps): their share, calls per step and microseconds a call."""
    events = sorted(events, key=lambda e: -e.self_cpu_time_total)
    whole = sum(e.self_cpu_time_total for e in events)
    return [
        f"{e.key}: {100 * e.self_cpu_time_total / whole:.1f}%, {e.count / steps:g} a step, "
        f"{e.self_cpu_time_total / e.count:.0f} us each"
        for e in events[:count]
    ]


def shares(events: list, steps: int) -> dict[str, float]:
    """The share (%) of the self time of each group of ops among ``events`` (:func:`profiled_ops`
    over ``steps`` steps), and the milliseconds of op time per step."""
    totals: dict[str, float] = {}
    for event in events:
        group = GROUPS.get(event.key, "the rest")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    totals = {group: 100 * t / whole for group, t in totals.items()}
    totals["ms per step"] = whole / steps / 1000
    return totals


def main() -> None:
    """Profile both steps and print their shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="forwards under bf16 autocast")
    parser.add_argument("--ops", type=int, default=0, help="also list the N costliest ops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, make in (
        ("teacher", teacher_step),
        ("cached distillation", cached_distillation_step),
    ):
        events = profiled_ops(make(args.bf16), STEPS)
        result = shares(events, STEPS)
        ms = result.pop("ms per step")
        parts = ", ".join(f"{g} {v:.0f}%" for g, v in sorted(result.items(), key=lambda x: -x[1]))
        precision = "bf16 autocast" if args.bf16 else "fp32"
        print(
            f"{name} step ({precision}, {args.threads} thread(s), {ms:.1f} ms of op time): {parts}"
        )
        for line in top_ops(events, args.ops, STEPS) if args.ops else []:
            print(f"  {line}")


if __name__ == "__main__":
    main()
