"""Test errors with raw and with standardised inputs, and a tutorial loop's, at issue 15's settings.

Usage::

    OMP_NUM_THREADS=1 KDISTILL_DATA=../shared/data python benchmarks/input_scaling.py

MNIST; teacher ``mlp:1200x1200,dropout=0.5,input_dropout=0.2`` trained on hard labels, then
student ``mlp:800x800`` distilled from it at T = 20, alpha = 0.5; both 2 epochs, batch 128, SGD
(Nesterov momentum 0.9) at a constant lr 0.01, no jitter or max-norm. Each seed
runs three ways:

- ``kdistill --inputs raw``: ``kdistill train`` and ``kdistill distill`` on pixels in [0, 1];
- ``kdistill --inputs standardized``: the same commands, the models scaling their inputs by
  MNIST's training-set pixel mean and std (written into their specs);
- ``tutorial loop``: :func:`throughput.reference_training` and
  :func:`throughput.reference_distillation` (a per-sample ``DataLoader`` that normalises each
  image by (0.1307, 0.3081), the teacher run every step).

kdistill's runs go through :func:`kdistill.cli.main`, in this process, so the data are loaded
once. Prints a table and writes it, with the machine and load, as JSON.
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py's reference loops
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY; kdistill/_openmp.py)

# isort: on
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import throughput  # noqa: E402
import torch  # noqa: E402

from kdistill.cli import main as kdistill_main  # noqa: E402
from kdistill.data import Split  # noqa: E402
from kdistill.models import build_model  # noqa: E402
from kdistill.reports import format_table  # noqa: E402
from kdistill.runs import cached_dataset  # noqa: E402
from kdistill.train import evaluate  # noqa: E402

TEACHER = "mlp:1200x1200,dropout=0.5,input_dropout=0.2"
STUDENT = "mlp:800x800"
# momentum 0.9: the default; a constant rate, as tutorials train (kdistill's default is cosine)
SETTINGS = {"batch_size": 128, "lr": 0.01, "epochs": 2, "schedule": "constant"}
TEMPERATURE, ALPHA = 20.0, 0.5


def kdistill_pair(inputs: str, seed: int, folder: Path, data_dir: str | None) -> dict:
    """Teacher and distilled student through the CLI with ``--inputs inputs``: test errors."""
    common = ["--dataset", "mnist", "--inputs", inputs, "--seed", str(seed), "--no-progress"]
    common += [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    if data_dir:
        common += ["--data-dir", data_dir]
    teacher, student = folder / f"{inputs}-teacher-{seed}", folder / f"{inputs}-student-{seed}"
    start = time.perf_counter()
    _run(["train", "--model", TEACHER, "--out", str(teacher), *common])
    middle = time.perf_counter()
    _run(
        ["distill", "--teacher", str(teacher), "--model", STUDENT, "--out", str(student)]
        + ["-T", str(TEMPERATURE), "--alpha", str(ALPHA), *common]
    )
    return {
        "teacher": _test_errors(teacher),
        "student": _test_errors(student),
        "teacher_model": json.loads((teacher / "config.json").read_text())["model"],
        "seconds": round(time.perf_counter() - start, 1),
        "teacher_seconds": round(middle - start, 1),
    }


def _run(argv: list[str]) -> None:
    status = kdistill_main(argv)
    if status != 0:
        raise SystemExit(f"kdistill {' '.join(argv)} exited with {status}")


def _test_errors(run: Path) -> int:
    return json.loads((run / "metrics.json").read_text())["test"]["errors"]


def tutorial_pair(seed: int, data_dir: str | None) -> dict:
    """Teacher and distilled student through the tutorial loops (inputs normalised by the
    tutorials' MNIST numbers): test errors on the normalised test set."""
    dataset = cached_dataset("mnist", data_dir)
    shape, classes = dataset.input_shape, dataset.num_classes
    mean, std = throughput.MNIST_NORMALIZE
    test = Split((dataset.test.images - mean) / std, dataset.test.labels)
    start = time.perf_counter()
    torch.manual_seed(seed)
    teacher = build_model(TEACHER, shape, classes)
    throughput.reference_training(teacher, dataset.train, **SETTINGS)
    middle = time.perf_counter()
    torch.manual_seed(seed)
    student = build_model(STUDENT, shape, classes)
    throughput.reference_distillation(student, teacher, dataset.train, **SETTINGS, alpha=ALPHA)
    return {
        "teacher": evaluate(teacher, test)["errors"],
        "student": evaluate(student, test)["errors"],
        "teacher_model": TEACHER + " (inputs normalised by the DataLoader)",
        "seconds": round(time.perf_counter() - start, 1),
        "teacher_seconds": round(middle - start, 1),
    }


def summary(rows: list[dict]) -> list[dict]:
    """Mean teacher and student errors of each way over its seeds."""
    table = []
    for way in dict.fromkeys(r["inputs"] for r in rows):
        mine = [r for r in rows if r["inputs"] == way]
        entry = {"inputs": way, "seeds": ",".join(str(r["seed"]) for r in mine)}
        for role in ("teacher", "student"):
            errors = [r[role] for r in mine]
            entry[f"{role}_errors"] = " / ".join(map(str, errors))
            entry[f"{role}_mean"] = statistics.mean(errors)
        table.append(entry)
    return table


def main(argv: list[str] | None = None) -> int:
    """Run every way and seed, print the tables and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default $KDISTILL_DATA)")
    parser.add_argument(
        "--json",
        default=str(throughput.REPO / "benchmarks" / "results" / "input_scaling.json"),
        help="output file (default benchmarks/results/input_scaling.json)",
    )
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    info = throughput.machine()
    print(f"input scaling: seeds {seeds}, load {info['loadavg']}, commit {info['git_commit']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdistill-inputs-") as folder:
        for seed in seeds:
            for inputs in ("raw", "standardized"):
                pair = kdistill_pair(inputs, seed, Path(folder), args.data_dir)
                rows.append({"inputs": f"kdistill --inputs {inputs}", "seed": seed, **pair})
                print(rows[-1], flush=True)
            rows.append(
                {"inputs": "tutorial loop", "seed": seed, **tutorial_pair(seed, args.data_dir)}
            )
            print(rows[-1], flush=True)
    table = summary(rows)
    print(format_table(table))
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"machine": info, "settings": {**SETTINGS, "temperature": TEMPERATURE,
              "alpha": ALPHA, "teacher": TEACHER, "student": STUDENT}, "runs": rows,
              "summary": table}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"load at end {info['loadavg_end']}; written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
