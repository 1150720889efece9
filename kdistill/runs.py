"""Runs: a run is data (:class:`RunSpec`), executed into a folder that makes it traceable.

A run folder holds ``config.json`` (the full resolved spec), ``meta.json`` (seed, versions, git
commit, machine), ``history.csv`` (one row per epoch), ``metrics.json`` (test errors, accuracy,
per-class errors, confusion matrix, cost) and ``model.safetensors``; all written atomically.
``metrics.json`` is written last, so its presence means the run is complete.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

import kdistill
from kdistill.checkpoint import atomic_write_json, atomic_write_text, save_safetensors
from kdistill.data import Dataset, Split, drop_classes, keep_classes, load_dataset
from kdistill.data import stratified_fraction as take_fraction
from kdistill.errors import KDistillError
from kdistill.models import build_model, count_parameters, flops_per_example, inference_throughput
from kdistill.train import TrainConfig, evaluate, fit, resolve_device


@dataclass
class RunSpec:
    """One training or distillation run, as data.

    ``teachers`` are run folders; with more than one they form an ensemble. The transfer-set
    fields select the training examples the student sees (paper, section 3).
    """

    model: str
    dataset: str = "digits"
    data_dir: str | None = None
    teachers: list[str] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    drop_classes: list[int] = field(default_factory=list)
    keep_classes: list[int] = field(default_factory=list)
    train_fraction: float = 1.0

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        """Rebuild a spec from its ``config.json`` form."""
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        return cls(**data)


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished run."""
    return (Path(folder) / "metrics.json").is_file()


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    download: bool = False,
    argv: list[str] | None = None,
) -> dict:
    """Run ``spec`` into the folder ``out`` and return its metrics.

    Checkpoints every epoch into ``out``; ``resume=True`` continues a killed run.
    """
    out = Path(out)
    spec.train.validate()
    dataset = cached_dataset(spec.dataset, spec.data_dir, download)
    transfer_set = transfer_split(dataset.train, spec)
    if len(transfer_set) == 0:
        raise KDistillError("the transfer set is empty: check drop/keep classes and fraction")
    teachers = [load_run_model(path)[0] for path in spec.teachers]

    torch.manual_seed(spec.train.seed)  # the student's initial weights
    model = build_model(spec.model, dataset.input_shape, dataset.num_classes)

    config = {"kind": "distill" if teachers else "train", **asdict(spec)}
    config.update(input_shape=list(dataset.input_shape), num_classes=dataset.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_json(out / "config.json", config)
    elif (out / "config.json").is_file():
        saved = json.loads((out / "config.json").read_text())
        if saved != json.loads(json.dumps(config)):
            raise KDistillError(
                f"{out} holds a run with another config; resume with the same command, "
                "or choose a new --out"
            )
    atomic_write_json(out / "meta.json", environment(spec.train.seed, argv))

    result = fit(
        model,
        transfer_set,
        spec.train,
        teacher=teachers[0] if len(teachers) == 1 else (teachers or None),
        test=dataset.test,
        checkpoint_dir=out,
        resume=resume,
        progress=progress,
        on_epoch=lambda history: write_history(out / "history.csv", history),
    )
    write_history(out / "history.csv", result.history)
    save_safetensors(out / "model.safetensors", model.state_dict())

    device = resolve_device(spec.train.device)
    metrics = {
        "test": evaluate(model, dataset.test, spec.train.eval_batch_size, spec.train.bf16),
        "transfer_set_size": len(transfer_set),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 2),
        "cost": {"model": model_cost(model, dataset.input_shape, device)},
    }
    if teachers:
        metrics["cost"]["teacher"] = [model_cost(t, dataset.input_shape, device) for t in teachers]
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def transfer_split(train: Split, spec: RunSpec) -> Split:
    """The examples of ``train`` that ``spec`` trains on: dropped/kept classes, a fraction."""
    split = train
    if spec.drop_classes:
        split = drop_classes(split, spec.drop_classes)
    if spec.keep_classes:
        split = keep_classes(split, spec.keep_classes)
    if spec.train_fraction < 1:
        split = take_fraction(split, spec.train_fraction, spec.train.seed)
    return split


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str | None, download: bool = False) -> Dataset:
    """:func:`~kdistill.data.load_dataset`, loaded once per process (runs share it)."""
    return load_dataset(name, data_dir, download)


def model_cost(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> dict:
    """Parameters, forward FLOPs per example and measured inference examples/s."""
    return {
        "parameters": count_parameters(model),
        "flops_per_example": flops_per_example(model, input_shape),
        "inference_examples_per_s": round(
            inference_throughput(model.to(device), input_shape, seconds=0.3)
        ),
    }


def load_run_model(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """The trained model of a run folder (in eval mode) and the run's config."""
    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise KDistillError(
            f"{folder} is not a finished kdistill run (needs config.json and model.safetensors)"
        )
    config = json.loads(config_path.read_text())
    model = build_model(config["model"], config["input_shape"], config["num_classes"])
    try:
        state = load_file(weights, device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise KDistillError(f"corrupt weights file {weights}: {exc}") from None
    model.load_state_dict(state)
    return model.to(device).eval(), config


def write_history(path: str | Path, rows: list[dict]) -> None:
    """Write per-epoch rows as CSV (atomically); columns are the union of the rows' keys."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_history(path: str | Path) -> list[dict]:
    """Read ``history.csv`` back, numbers as floats."""
    with open(path, newline="") as handle:
        return [
            {k: float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def environment(seed: int, argv: list[str] | None = None) -> dict:
    """What is needed to trace and re-run a result: seed, versions, commit, machine."""
    return {
        "seed": seed,
        "argv": argv if argv is not None else sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kdistill": kdistill.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def git_commit() -> str | None:
    """The commit of the kdistill source tree, with ``+dirty`` for uncommitted changes."""
    root = Path(kdistill.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")
