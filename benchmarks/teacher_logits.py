"""Speed of teacher-logits files (issue 14): writing one, and distilling from it under jitter.

Usage::

    python benchmarks/teacher_logits.py            # MNIST: ~6 minutes on 2 busy cores
    python benchmarks/teacher_logits.py --quick    # seconds; a smoke test (tests)

Measured side by side in one run, on this machine (its load average is printed and saved):

1. **write**: seconds to compute and write the logits of the 1200-1200 teacher for every
   training example under the 25 shifts of jitter 2 (fp32, exact; and bf16 autocast, for
   reference: faster, not equal to an fp32 online teacher).
2. **epochs**: the fastest epoch of a 800-800 student distilled (a) from logits cached in
   memory without jitter, (b) from the file with jitter 2, (c) from the online teacher with
   jitter 2. Rows take turns, round after round, so that load changes hit them alike.
   Targets: (b) >= 0.9x (a) and >= 1.5x (c) in examples/s.
3. **fp16**: test errors of students distilled from the fp32 file and from its fp16 copy
   (same seeds, same shifts): the effect of storing half precision.

Real MNIST is used when ``KDISTILL_DATA`` (or ``--data-dir``) holds it, random tensors of the
same shape otherwise. The teacher is trained briefly here (its accuracy matters only to (3)).
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
import os
import tempfile
import time
from dataclasses import dataclass

import torch

from kdistill.data import Dataset, Split, load_dataset, resolve_data_dir
from kdistill.models import build_model
from kdistill.reports import format_table
from kdistill.runs import git_commit
from kdistill.teacher_logits import (
    compute_teacher_logits,
    dataset_identity,
    read_teacher_logits,
    write_teacher_logits,
)
from kdistill.train import TrainConfig, evaluate, fit

REPO = Path(__file__).resolve().parent.parent
TEACHER_SPEC = "mlp:1200x1200,dropout=0.5,input_dropout=0.2"
STUDENT_SPEC = "mlp:800x800"
JITTER = 2


@dataclass(frozen=True)
class Sizes:
    """How much work each part does (full or quick)."""

    train_examples: int  # of the file (all of MNIST's training split when real)
    epoch_examples: int  # of the timed epochs
    rounds: int
    teacher_epochs: int
    student_epochs: int
    seeds: int


FULL = Sizes(60_000, 20_000, 3, 2, 3, 2)  # fp16 students train on the 20k of the timed epochs
QUICK = Sizes(600, 300, 1, 1, 1, 1)


def get_data(quick: bool, data_dir: str | None) -> Dataset:
    """MNIST when present (never in --quick), else random tensors of its shape."""
    if not quick and (resolve_data_dir(data_dir) / "mnist").is_dir():
        return load_dataset("mnist", data_dir)
    n = QUICK.train_examples if quick else FULL.train_examples
    g = torch.Generator().manual_seed(0)

    def split(size: int) -> Split:
        return Split(torch.rand(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,)))

    return Dataset("random", split(n), split(max(100, n // 6)), tuple(str(d) for d in range(10)))


def seeded_model(spec: str, seed: int = 1) -> torch.nn.Module:
    """A fresh model whose initial weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return build_model(spec, (1, 28, 28), 10)


def time_write(dataset: Dataset, teacher, folder: Path, bf16: bool) -> tuple[dict, torch.Tensor]:
    """Compute every view of the teacher and write the file: the seconds of each part."""
    started, cpu_started = time.perf_counter(), time.process_time()
    logits = compute_teacher_logits(teacher, dataset.train.images, JITTER, bf16=bf16)
    computed = time.perf_counter() - started
    path = folder / ("teacher-bf16.logits" if bf16 else "teacher.logits")
    write_teacher_logits(
        path,
        logits,
        identity=dataset_identity(dataset),
        labels=dataset.train.labels,
        max_shift=JITTER,
        teachers=[{"source": TEACHER_SPEC}],
        compute="bf16-autocast" if bf16 else "fp32",
    )
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    row = {
        "row": f"write 25 views, {'bf16 autocast' if bf16 else 'fp32'}",
        "examples": len(dataset.train),
        "forward_passes": logits.shape[0] * logits.shape[1],
        "compute_s": round(computed, 1),
        "total_s": round(total, 1),
        "cpu_s": round(cpu, 1),  # CPU time of this process: the wall time on idle cores
        "threads": torch.get_num_threads(),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }
    return row, logits


def time_epochs(dataset: Dataset, teacher, logits_file, sizes: Sizes) -> list[dict]:
    """Fastest epoch of each way to distil, the rows taking turns round after round."""
    subset = dataset.train.subset(torch.arange(sizes.epoch_examples))  # ids carried
    base = dict(epochs=2, loss_args={"temperature": 20.0}, lr=0.05, device="cpu")
    rows = {
        "cached logits, no jitter": (TrainConfig(**base), {"teacher": teacher}),
        "file, jitter 2": (TrainConfig(**base, jitter=JITTER), {"teacher_logits": logits_file}),
        "online teacher, jitter 2": (TrainConfig(**base, jitter=JITTER), {"teacher": teacher}),
    }
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(sizes.rounds):
        for name, (config, source) in rows.items():
            student = seeded_model(STUDENT_SPEC)
            result = fit(student, subset, config, progress=False, **source)
            best[name] = min(best[name], *(r["seconds"] for r in result.history))
    return [
        {
            "row": name,
            "examples": sizes.epoch_examples,
            "best_epoch_s": round(seconds, 3),
            "examples_per_s": round(sizes.epoch_examples / seconds),
        }
        for name, seconds in best.items()
    ]


def fp16_effect(dataset: Dataset, files: dict, sizes: Sizes) -> list[dict]:
    """Test errors of students distilled with jitter from each stored precision, same seeds."""
    subset = dataset.train.subset(torch.arange(sizes.epoch_examples))  # ids carried
    rows = []
    for seed in range(sizes.seeds):
        for dtype, logits_file in files.items():
            config = TrainConfig(
                epochs=sizes.student_epochs, jitter=JITTER, loss_args={"temperature": 20.0},
                lr=0.05, seed=seed, device="cpu",
            )  # fmt: skip
            student = seeded_model(STUDENT_SPEC, seed)
            fit(student, subset, config, progress=False, teacher_logits=logits_file)
            errors = evaluate(student, dataset.test)["errors"]
            rows.append({"seed": seed, "file_dtype": dtype, "test_errors": errors})
    return rows


def machine() -> dict:
    """Where and when the figures were taken."""
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements, print them and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 write row")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default $KDISTILL_DATA)")
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument(
        "--epochs-only",
        action="store_true",
        help="only the epoch table (2): the file covers just the timed examples (~4x cheaper)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    info = machine()
    dataset = get_data(args.quick, args.data_dir)
    if args.epochs_only:  # a dataset of the timed examples alone: a smaller file, same epochs
        args.no_bf16 = True
        first = torch.arange(sizes.epoch_examples)
        dataset = Dataset(dataset.name, dataset.train.subset(first), dataset.test,
                          dataset.class_names)  # fmt: skip
        dataset.train.example_index = None  # canonical order of this smaller dataset
    info.update(data=dataset.name, train_examples=len(dataset.train))
    print(f"load {info['loadavg_start']}, {info['torch_threads']} thread(s), {dataset.name}",
          flush=True)  # fmt: skip

    teacher = seeded_model(TEACHER_SPEC)
    teacher_config = TrainConfig(epochs=sizes.teacher_epochs, jitter=JITTER, lr=0.05, device="cpu")
    fit(teacher, dataset.train.subset(torch.arange(sizes.epoch_examples)), teacher_config,
        progress=False)  # fmt: skip
    info["teacher_test_errors"] = evaluate(teacher.eval(), dataset.test)["errors"]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_rows = []
        for bf16 in (False,) if args.no_bf16 else (False, True):
            row, logits = time_write(dataset, teacher, folder, bf16)
            write_rows.append(row)
            print(row, f"load {os.getloadavg()[0]:.2f}", flush=True)
            if not bf16:
                fp32_logits = logits
        write_teacher_logits(
            folder / "teacher-fp16.logits", fp32_logits, identity=dataset_identity(dataset),
            labels=dataset.train.labels, max_shift=JITTER, teachers=[{"source": TEACHER_SPEC}],
            dtype="float16",
        )  # fmt: skip
        files = {
            "float32": read_teacher_logits(folder / "teacher.logits"),
            "float16": read_teacher_logits(folder / "teacher-fp16.logits"),
        }
        epoch_rows = time_epochs(dataset, teacher, files["float32"], sizes)
        print(epoch_rows, f"load {os.getloadavg()[0]:.2f}", flush=True)
        fp16_rows = [] if args.epochs_only else fp16_effect(dataset, files, sizes)

    speed = {r["row"]: r["examples_per_s"] for r in epoch_rows}
    ratios = {
        "file_jitter_over_cached": round(
            speed["file, jitter 2"] / speed["cached logits, no jitter"], 3
        ),
        "file_jitter_over_online_jitter": round(
            speed["file, jitter 2"] / speed["online teacher, jitter 2"], 3
        ),
    }
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    for table in (write_rows, epoch_rows, fp16_rows):
        if table:
            print(format_table(table))
    print("  ".join(f"{k}={v}" for k, v in ratios.items()))
    print(f"teacher test errors {info['teacher_test_errors']}; load at end {info['loadavg_end']}")
    result = {"machine": info, "write": write_rows, "epochs": epoch_rows, "ratios": ratios,
              "fp16": fp16_rows}  # fmt: skip
    default = "teacher_logits-quick.json" if args.quick else "teacher_logits.json"
    if args.epochs_only:
        default = default.replace(".json", "-epochs.json")
    path = Path(args.json) if args.json else REPO / "benchmarks" / "results" / default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
