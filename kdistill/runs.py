"""Runs: a run is data (:class:`RunSpec`), executed into a folder that makes it traceable.

A run folder holds ``config.json`` (the full resolved spec), ``meta.json`` (seed, versions, git
commit, machine), ``history.csv`` (one row per epoch), ``metrics.json`` (test errors, accuracy,
per-class errors, confusion matrix, cost) and ``model.safetensors``; all written atomically.
``metrics.json`` is written last, so its presence means the run is complete.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

import kdistill
from kdistill import distributed
from kdistill.checkpoint import (
    FolderLock,
    atomic_write_json,
    atomic_write_text,
    check_folder_path,
    has_checkpoint,
    make_folder,
    save_safetensors,
)
from kdistill.compat import (
    config_differences,
    current_run_config,
    describe_differences,
)
from kdistill.data import (
    Dataset,
    Split,
    drop_classes,
    keep_classes,
    load_dataset,
    resolve_data_dir,
    train_val_split,
)
from kdistill.data import stratified_fraction as take_fraction
from kdistill.errors import KDistillError
from kdistill.models import (
    build_model,
    count_parameters,
    flops_per_example,
    imports_code,
    inference_throughput,
)
from kdistill.teacher_logits import (
    DTYPES,
    TeacherLogitsFile,
    compute_teacher_logits,
    dataset_identity,
    read_teacher_logits,
    weights_sha256,
    write_teacher_logits,
)
from kdistill.train import FitResult, TrainConfig, fit, resolve_device


@dataclass
class RunSpec:
    """One training or distillation run, as data.

    ``teachers`` are run folders, or plain PyTorch ``state_dict`` files (``.pt``/``.pth``,
    or ``.safetensors``) of the model ``teacher_model``; with more than one they form an
    ensemble. Instead of teachers, ``teacher_logits`` may name a teacher-logits file (see
    :mod:`kdistill.teacher_logits`): no teacher model is loaded. The transfer-set fields select
    the training examples the student sees (paper, section 3).
    """

    model: str
    dataset: str = "digits"
    data_dir: str | None = None
    teachers: list[str] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    drop_classes: list[int] = field(default_factory=list)
    keep_classes: list[int] = field(default_factory=list)
    train_fraction: float = 1.0
    teacher_model: str | None = None  # the model spec of state_dict teacher files
    holdout_fraction: float = 0.0  # stratified part of the training split kept out (seeded)
    teacher_logits: str | None = None  # a teacher-logits file, instead of teachers

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        """Rebuild a spec from its ``config.json`` form, as saved by any kdistill version."""
        names = {f.name for f in fields(cls)}  # not what is derived or recorded beside them
        data = {k: v for k, v in current_run_config(data).items() if k in names}
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)

    def validate(self, num_classes: int | None = None) -> None:
        """Raise a clear error on settings that cannot work (class numbers once they are known)."""
        self.train.validate()
        if not 0 < self.train_fraction <= 1:
            raise KDistillError(f"--fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 <= self.holdout_fraction < 1:
            raise KDistillError(f"holdout fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.drop_classes and self.keep_classes:
            raise KDistillError(
                "--drop-classes and --keep-classes exclude each other: give one (keeping "
                "classes already drops all others)"
            )
        if num_classes is not None:
            for option, classes in (
                ("--drop-classes", self.drop_classes),
                ("--keep-classes", self.keep_classes),
            ):
                wrong = [c for c in classes if not 0 <= c < num_classes]
                if wrong:
                    raise KDistillError(
                        f"{option} {','.join(map(str, wrong))}: no such class; the "
                        f"{self.dataset} classes are 0 to {num_classes - 1}"
                    )


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished run."""
    return (Path(folder) / "metrics.json").is_file()


def run_difference(saved: dict, spec: RunSpec) -> list[str]:
    """The settings in which the run recorded in ``saved`` (a config.json) differs from ``spec``.

    :func:`kdistill.compat.config_differences` decides (a config from any kdistill version);
    where the data lay is not a setting (the data themselves are verified by checksum).
    """
    return config_differences(saved, asdict(spec), ignore=("data_dir",))


def check_same_run(folder: str | Path, spec: RunSpec, teacher_sha256: list[str] | None) -> None:
    """Raise unless ``folder`` records the run ``spec`` with the same teachers' weights.

    ``teacher_sha256`` are the teachers' weights now; a run made before kdistill recorded them
    (no ``teacher_sha256`` in its config.json) is taken as "not recorded", not as a mismatch.
    """
    folder = Path(folder)
    saved = read_config(folder)
    differ = run_difference(saved, spec)
    if differ:
        raise KDistillError(
            f"{folder} holds a run with other settings ({describe_differences(differ)}); "
            "continue it with the command that started it, or choose a new --out"
        )
    recorded = saved.get("teacher_sha256")
    if not isinstance(recorded, list) or teacher_sha256 is None:
        return
    for path, old, new in zip(spec.teachers, recorded, teacher_sha256, strict=False):
        if old is not None and old != new:
            raise KDistillError(
                f"the teacher {path} has changed since {folder} was started (sha256 of its "
                f"weights {new[:12]}..., recorded {str(old)[:12]}...): put the original teacher "
                "back to continue, or distill into a new --out"
            )


def read_config(folder: str | Path) -> dict:
    """A run folder's config.json, or a one-line error saying why it cannot be read."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise KDistillError(f"{folder} is not a kdistill run (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise KDistillError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise KDistillError(f"{path} is not a kdistill run config (no model spec)")
    return config


def accept_folder(
    out: Path, spec: RunSpec, resume: bool, teacher_sha256: list[str] | None = None
) -> None:
    """Decide, before anything is written, whether ``out`` may take this run.

    A new run needs a folder without a checkpoint or a finished run in it; ``resume`` needs a
    checkpoint of the same run (same settings, same teachers' weights).
    """
    check_folder_path(out)
    if resume:
        if not has_checkpoint(out):
            if is_complete(out):
                raise KDistillError(f"{out} holds a finished run: there is nothing to resume")
            raise KDistillError(f"no checkpoint to resume from in {out}: run without --resume")
        if (out / "config.json").is_file():
            check_same_run(out, spec, teacher_sha256)
    elif has_checkpoint(out):
        raise KDistillError(
            f"{out} already holds a checkpoint: pass --resume to continue it, or choose a new --out"
        )
    elif is_complete(out):
        raise KDistillError(
            f"{out} already holds a finished run: choose a new --out (or delete that folder)"
        )


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    download: bool = False,
    argv: list[str] | None = None,
    teacher_logits: torch.Tensor | TeacherLogitsFile | None = None,
    tensorboard: bool = False,
    trust_code: bool = False,
) -> dict:
    """Run ``spec`` into the folder ``out`` and return its metrics.

    Checkpoints every epoch into ``out``; ``resume=True`` continues a killed run.
    ``teacher_logits`` (of the transfer set) spares recomputing them, e.g. across a sweep (or
    the file of ``spec.teacher_logits``, already read);
    ``tensorboard`` also logs every epoch to ``out/tensorboard``. Under torchrun every rank
    trains and returns the test metrics, and rank 0 alone writes ``out`` (its metrics alone
    hold ``cost``). ``trust_code`` lets teacher run folders whose config names a
    ``module:function`` model import and call it (see :func:`load_run_model`).

    Whether ``out`` may take the run is decided before anything is written to it, and a run
    that fails before its first checkpoint leaves no folder behind. The teachers' weights are
    recorded (sha256) so that a resume with other teachers is refused.
    """
    is_main = distributed.context().is_main
    out = Path(out)
    hashes = _accept_run(spec, out, resume)
    dataset, transfer_set = _prepare_data(spec, download)

    # config.json and the checkpoints name the loss and all its arguments
    distilling = bool(spec.teachers) or spec.teacher_logits is not None
    spec = replace(spec, train=spec.train.with_loss(spec.train.make_loss(distilling)))
    torch.manual_seed(spec.train.seed)  # the student's initial weights
    model = build_model(spec.model, dataset.input_shape, dataset.num_classes)
    teachers, teacher_logits = _load_teachers(spec, dataset, teacher_logits, trust_code)
    config = _run_config(spec, dataset, distilling, hashes, teacher_logits)
    with contextlib.ExitStack() as held:  # the folder's lock, from its start to the results
        created = _start_or_resume_folder(out, config, spec, teacher_logits, resume, argv, held)
        result = _fit_logged(
            model,
            transfer_set,
            spec,
            dataset.test,
            out,
            teachers=teachers,
            teacher_logits=teacher_logits,
            resume=resume,
            progress=progress,
            tensorboard=tensorboard and is_main,
            created=created,
        )
        metrics = _evaluate_run(model, transfer_set, dataset.test, spec, result)
        if is_main:
            metrics["cost"] = _run_cost(model, spec, dataset, teachers)
            _write_results(out, model, result.history, metrics)
    return metrics


def _accept_run(spec: RunSpec, out: Path, resume: bool) -> list[str] | None:
    """Check ``spec``, its device and whether ``out`` may take it; return the teachers' sha256.

    Nothing is loaded or written yet: settings that cannot work, an unknown or absent device
    and a folder that cannot take the run (:func:`accept_folder`, on rank 0) fail first.
    """
    spec.validate()
    resolve_device(spec.train.device)  # an unknown or absent device, before any work
    hashes = [weights_sha256(t) for t in spec.teachers] if spec.teachers else None
    distributed.on_main(lambda: accept_folder(out, spec, resume, hashes))
    return hashes


def _prepare_data(spec: RunSpec, download: bool) -> tuple[Dataset, Split]:
    """The dataset of ``spec`` and its transfer set, refusing classes it lacks or an empty set."""
    dataset = cached_dataset(spec.dataset, spec.data_dir, download)
    spec.validate(dataset.num_classes)
    transfer_set = transfer_split(dataset.train, spec)
    if len(transfer_set) == 0:
        raise KDistillError("the transfer set is empty: check drop/keep classes and fraction")
    return dataset, transfer_set


def _load_teachers(
    spec: RunSpec,
    dataset: Dataset,
    teacher_logits: torch.Tensor | TeacherLogitsFile | None,
    trust_code: bool,
) -> tuple[list[nn.Module], torch.Tensor | TeacherLogitsFile | None]:
    """The teachers of ``spec`` (run folders or state_dict files, checked against ``dataset``)
    and the teacher logits to distill from: ``teacher_logits`` as given, or the file that
    ``spec.teacher_logits`` names, read here unless it was passed in already read."""
    teachers = [
        load_teacher(
            path,
            spec.teacher_model,
            dataset.input_shape,
            dataset.num_classes,
            dataset=spec.dataset,
            trust_code=trust_code,
        )
        for path in spec.teachers
    ]
    if spec.teacher_logits is not None and not isinstance(teacher_logits, TeacherLogitsFile):
        teacher_logits = open_teacher_logits(spec, dataset)
    return teachers, teacher_logits


def _run_config(
    spec: RunSpec,
    dataset: Dataset,
    distilling: bool,
    teacher_sha256: list[str] | None,
    teacher_logits: torch.Tensor | TeacherLogitsFile | None,
) -> dict:
    """What config.json records: the resolved spec, the data's shape and where they lay, and
    the teachers' weights (sha256) or teacher-logits file that a resume must find again."""
    config = {"kind": "distill" if distilling else "train", **asdict(spec)}
    config.update(input_shape=list(dataset.input_shape), num_classes=dataset.num_classes)
    if spec.dataset != "digits":  # where the files were (also from $KDISTILL_DATA): reloadable
        config["data_dir"] = str(resolve_data_dir(spec.data_dir).resolve())
    if teacher_sha256 is not None:
        config["teacher_sha256"] = teacher_sha256
    if isinstance(teacher_logits, TeacherLogitsFile):
        config.update(teacher_logits_record(teacher_logits))
    return config


def _start_or_resume_folder(
    out: Path,
    config: dict,
    spec: RunSpec,
    teacher_logits: torch.Tensor | TeacherLogitsFile | None,
    resume: bool,
    argv: list[str] | None,
    held: contextlib.ExitStack,
) -> bool | None:
    """On rank 0, start and lock the run folder (or add this invocation to a resumed one).

    A resume refuses a teacher-logits file other than the one the run started with. Returns
    whether the folder was new (rank 0's answer, on every rank).
    """
    if isinstance(teacher_logits, TeacherLogitsFile):  # resume refuses another file
        distributed.on_main(lambda: check_same_logits_file(out, teacher_logits, resume))
    seed = spec.train.seed
    return distributed.on_main(lambda: _start_folder(out, config, resume, seed, argv, held))


def _fit_logged(
    model: nn.Module,
    transfer_set: Split,
    spec: RunSpec,
    test: Split,
    out: Path,
    *,
    teachers: list[nn.Module],
    teacher_logits: torch.Tensor | TeacherLogitsFile | None,
    resume: bool,
    progress: bool,
    tensorboard: bool,
    created: bool | None,
) -> FitResult:
    """:func:`~kdistill.train.fit` ``model``, checkpointing into ``out``; return fit's result.

    Rank 0 writes history.csv (and, with ``tensorboard``, out/tensorboard) every epoch. A run
    that fails before its first checkpoint leaves no stub behind (a folder it ``created``).
    """
    is_main = distributed.context().is_main
    log_board = None
    if tensorboard:
        from kdistill.tblog import TensorBoardLog

        log_board = TensorBoardLog(out / "tensorboard")

    def on_epoch(history: list[dict]) -> None:
        write_history(out / "history.csv", history)
        if log_board is not None:
            log_board(history)

    try:
        result = fit(
            model,
            transfer_set,
            spec.train,
            teacher=teachers[0] if len(teachers) == 1 else (teachers or None),
            teacher_logits=teacher_logits,
            test=test,
            checkpoint_dir=out,
            resume=resume,
            progress=progress,
            on_epoch=on_epoch if is_main else None,
        )
    except BaseException:
        if is_main and not resume and not has_checkpoint(out):
            _remove_stub(out, created, log_board)  # nothing worth keeping: leave no stub
        raise
    if log_board is not None:
        log_board.close()
    return result


def _evaluate_run(
    model: nn.Module, transfer_set: Split, test: Split, spec: RunSpec, result: FitResult
) -> dict:
    """The metrics every rank returns: test (and validation) scores and how fit went.

    The validation part is the one fit held out of ``transfer_set`` (the same seeded split).
    The test scores are fit's own of the final weights where it made them (the same call, so
    the same figures), else made here.
    """
    scores = result.test
    if scores is None:
        scores = distributed.evaluate(model, test, spec.train.eval_batch_size)  # fp32 scores
    trained_on, val = transfer_set, None
    if spec.train.val_fraction > 0:  # the part fit held out for validation (same split)
        trained_on, val = train_val_split(transfer_set, spec.train.val_fraction, spec.train.seed)
    metrics = {
        "test": scores,
        "transfer_set_size": len(trained_on),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 2),
    }
    if val is not None:
        metrics["val"] = distributed.evaluate(model, val, spec.train.eval_batch_size)
    return metrics


def _run_cost(model: nn.Module, spec: RunSpec, dataset: Dataset, teachers: list[nn.Module]) -> dict:
    """The student's and teachers' size, FLOPs and inference speed (:func:`model_cost`)."""
    device = resolve_device(spec.train.device)
    cost = {"model": model_cost(model, dataset.input_shape, device)}
    if teachers:
        cost["teacher"] = [model_cost(t, dataset.input_shape, device) for t in teachers]
    return cost


def _write_results(out: Path, model: nn.Module, history: list[dict], metrics: dict) -> None:
    """Write history.csv, model.safetensors and, last, metrics.json (rank 0 only)."""
    write_history(out / "history.csv", history)
    save_safetensors(out / "model.safetensors", model.state_dict())
    atomic_write_json(out / "metrics.json", metrics)


def run_or_resume(
    spec: RunSpec,
    folder: str | Path,
    *,
    same_run: Callable[[Path, RunSpec], None] | None = None,
    **execute_args: Any,
) -> tuple[dict, str]:
    """Make the run ``spec`` in ``folder`` from whatever state the folder is in.

    A finished run is checked and kept ("done"), an interrupted one (a checkpoint, no
    metrics.json) is checked and resumed ("resumed"), anything else runs from the start
    ("new"). Returns the run's metrics and which of the three it was. ``same_run(folder,
    spec)`` raises unless the run recorded in ``folder`` is ``spec`` (default: the settings
    as :func:`check_same_run` compares them; a resume also checks the teachers' weights).
    ``execute_args`` go to :func:`execute` (``progress``, ``argv``, ...).
    """
    folder = Path(folder)
    same_run = same_run or functools.partial(check_same_run, teacher_sha256=None)
    if is_complete(folder):
        same_run(folder, spec)
        return json.loads((folder / "metrics.json").read_text()), "done"
    resume = has_checkpoint(folder)
    if resume:
        same_run(folder, spec)
    metrics = execute(spec, folder, resume=resume, **execute_args)
    return metrics, "resumed" if resume else "new"


def _start_folder(
    out: Path,
    config: dict,
    resume: bool,
    seed: int,
    argv: list[str] | None,
    held: contextlib.ExitStack,
) -> bool:
    """Create and lock the run folder, then write config.json and meta.json; return whether
    the folder was new.

    The folder was accepted before (:func:`accept_folder`); its lock (:class:`FolderLock`,
    entered on ``held``, so it lasts the whole run) refuses a second process, and a new run
    into a folder where another process started one in the meantime is refused here (a resume
    may go on: a finished run that kept its checkpoint can be resumed). meta.json records every
    invocation of the run (the first one's fields also at its top level), so a resume adds to it.
    """
    created = make_folder(out)
    held.enter_context(FolderLock(out))
    if not resume and (is_complete(out) or has_checkpoint(out)):
        raise KDistillError(
            f"another process wrote a run into {out} meanwhile; choose another --out"
        )
    invocations = []
    if resume:
        invocations = read_invocations(out)
    else:
        atomic_write_json(out / "config.json", config)
    invocations.append(environment(seed, argv))
    atomic_write_json(out / "meta.json", {**invocations[0], "invocations": invocations})
    return created


def read_invocations(folder: str | Path) -> list[dict]:
    """Every recorded invocation of a run (a meta.json from before this list: one of them)."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(meta, dict):
        return []
    if isinstance(meta.get("invocations"), list):
        return list(meta["invocations"])
    return [meta]


def _remove_stub(out: Path, created: bool | None, log_board) -> None:
    """Remove what a run that failed before its first checkpoint wrote into ``out``."""
    if log_board is not None:
        log_board.close()
    for name in ("config.json", "meta.json", "history.csv"):
        (out / name).unlink(missing_ok=True)
    if created:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
        try:
            out.rmdir()  # only when empty: never anything the user put there
        except OSError:
            pass


def open_teacher_logits(spec: RunSpec, dataset: Dataset) -> TeacherLogitsFile:
    """Read ``spec.teacher_logits``, refusing a file not written for ``dataset`` (its name,
    example order, class count) or with fewer shifts than ``spec.train.jitter``."""
    if spec.teachers:
        raise KDistillError("give teacher runs or a teacher-logits file, not both")
    return read_teacher_logits(
        spec.teacher_logits, expect=dataset_identity(dataset), max_shift=spec.train.jitter
    )


def teacher_logits_record(logits_file: TeacherLogitsFile) -> dict:
    """What a student's config.json records of its teacher-logits file."""
    return {
        "teacher_logits_sha256": logits_file.sha256,
        "teacher_logits_teachers_sha256": logits_file.describe()["teachers_sha256"],
    }


def check_same_logits_file(out: Path, logits_file: TeacherLogitsFile, resume: bool) -> None:
    """On resume, refuse a teacher-logits file other than the one the run started with."""
    config_path = out / "config.json"
    if not resume or not config_path.is_file():
        return
    recorded = json.loads(config_path.read_text()).get("teacher_logits_sha256")
    if recorded != logits_file.sha256:
        raise KDistillError(
            f"the teacher-logits file {logits_file.path} has changed since {out} was started "
            f"(sha256 {logits_file.sha256[:12]}..., recorded {str(recorded)[:12]}...): resume "
            "with the same file, or choose a new --out"
        )


def transfer_split(train: Split, spec: RunSpec) -> Split:
    """The examples of ``train`` that ``spec`` trains on: dropped/kept classes, a fraction."""
    split = train
    if spec.holdout_fraction > 0:  # never trained on, e.g. to choose a bias shift honestly
        split, _ = train_val_split(train, spec.holdout_fraction, spec.train.seed)
    if spec.drop_classes:
        split = drop_classes(split, spec.drop_classes)
    if spec.keep_classes:
        split = keep_classes(split, spec.keep_classes)
    if spec.train_fraction < 1:
        split = take_fraction(split, spec.train_fraction, spec.train.seed)
    return split


def holdout_split(train: Split, spec: RunSpec) -> Split:
    """The held-out part of ``train`` that ``spec`` (with ``holdout_fraction`` > 0) never sees."""
    if spec.holdout_fraction <= 0:
        raise KDistillError("this run keeps no held-out part: set holdout_fraction")
    return train_val_split(train, spec.holdout_fraction, spec.train.seed)[1]


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str | None, download: bool = False) -> Dataset:
    """:func:`~kdistill.data.load_dataset`, loaded once per process (runs share it)."""
    return load_dataset(name, data_dir, download)


def model_cost(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> dict:
    """Parameters, forward FLOPs per example and measured inference examples/s.

    The speed is measured once per architecture in a process (:func:`_measured_throughput`):
    a reproduction's dozens of runs share a few architectures, and timing the student and
    again each teacher was most of a short run's fixed cost.
    """
    model = model.to(device)
    return {
        "parameters": count_parameters(model),
        "flops_per_example": flops_per_example(model, input_shape),
        "inference_examples_per_s": round(_measured_throughput(model, tuple(input_shape))),
    }


_THROUGHPUT: dict[tuple, float] = {}


def _measured_throughput(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """:func:`inference_throughput`, remembered for models that compute alike: the same modules
    (``repr``: classes and their settings), parameter shapes, dtypes and device, at the same
    number of threads. A model's weights do not change its speed."""
    architecture = (
        repr(model),
        tuple((name, tuple(p.shape), p.dtype, p.device) for name, p in model.named_parameters()),
        input_shape,
        torch.get_num_threads(),
    )
    if architecture not in _THROUGHPUT:
        # 0.1 s of warm batches: 5 measurements of the 800-800 MLP spread 4-6% against 2-3%
        # at 0.3 s, for 0.2 s less of every run's fixed cost (issue 15, docs/performance.md)
        _THROUGHPUT[architecture] = inference_throughput(model, input_shape, seconds=0.1)
    return _THROUGHPUT[architecture]


def load_run_model(
    folder: str | Path, device: str | torch.device = "cpu", *, trust_code: bool = False
) -> tuple[nn.Module, dict]:
    """The trained model of a run folder (in eval mode) and the run's config.

    Loading trusts the folder's data, never its code: the built-in specs (``mlp:...``,
    ``cnn:...``) are built from config.json and filled from model.safetensors (tensors only).
    A ``module:function`` spec in config.json would import that module and call the function,
    so it is refused unless ``trust_code=True`` (``--trust-code``).
    """
    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise KDistillError(
            f"{folder} is not a finished kdistill run (needs config.json and model.safetensors)"
        )
    config = read_config(folder)
    spec = config["model"]
    if imports_code(spec) and not trust_code:
        raise KDistillError(
            f"{config_path} names the model {spec!r}, which loading would import and run as "
            "code; pass --trust-code (trust_code=True) only if you trust that folder"
        )
    try:
        input_shape, num_classes = list(config["input_shape"]), int(config["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise KDistillError(f"{config_path} lacks the input_shape and num_classes") from None
    model = build_model(spec, input_shape, num_classes)
    try:
        state = load_file(weights, device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise KDistillError(f"corrupt weights file {weights}: {exc}") from None
    _load_fitting(
        model, state, f"the weights in {weights} do not fit the model {spec!r} of its config.json"
    )
    return model.to(device).eval(), config


def load_teacher(
    path: str | Path,
    model_spec: str | None,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str | torch.device = "cpu",
    *,
    dataset: str | None = None,
    trust_code: bool = False,
) -> nn.Module:
    """A teacher from a run folder, or from a plain ``state_dict`` file of ``model_spec``.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``: they may hold
    tensors, never pickled code. A run folder must have been trained on ``dataset`` (when
    given) with the same input shape and classes; see :func:`load_run_model` for
    ``trust_code``.
    """
    path = Path(path)
    if path.is_dir():
        check_teacher_data(path, read_config(path), dataset, input_shape, num_classes)
        return load_run_model(path, device, trust_code=trust_code)[0]
    if not path.is_file():
        raise KDistillError(f"teacher {path} does not exist (expected a run folder or a .pt file)")
    if not model_spec:
        raise KDistillError(
            f"teacher {path} is a weights file: name its architecture with --teacher-model SPEC"
        )
    model = build_model(model_spec, input_shape, num_classes)
    load_state_dict_file(model, path)
    return model.to(device).eval()


def write_for_teachers(
    teachers: Sequence[str | Path],
    dataset: Dataset,
    out: str | Path,
    *,
    max_shift: int = 0,
    teacher_model: str | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    bf16: bool = False,
) -> dict:
    """Load teacher run(s) or weight files (:func:`load_teacher`), compute their logits on
    ``dataset``'s training split under every shift in [-max_shift, max_shift]², write them to
    ``out`` (see :mod:`kdistill.teacher_logits`).

    One teacher gives ``(V, N, C)`` logits, several an ensemble ``(M, V, N, C)``.

    Returns:
        What was written: path, sha256, shape, seconds spent computing and writing.
    """
    if dtype not in DTYPES:
        raise KDistillError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if max_shift < 0:
        raise KDistillError(f"jitter must be >= 0 pixels, got {max_shift}")
    if not teachers:
        raise KDistillError("give at least one teacher run")
    records = [{"source": str(t), "weights_sha256": weights_sha256(t)} for t in teachers]
    models = [
        load_teacher(t, teacher_model, dataset.input_shape, dataset.num_classes, device)
        for t in teachers
    ]
    started = time.perf_counter()
    logits = compute_teacher_logits(
        models[0] if len(models) == 1 else models, dataset.train.images, max_shift, bf16=bf16
    )
    computed = time.perf_counter() - started
    sha256 = write_teacher_logits(
        out,
        logits,
        identity=dataset_identity(dataset),
        labels=dataset.train.labels,
        max_shift=max_shift,
        teachers=records,
        dtype=dtype,
        compute="bf16-autocast" if bf16 else "fp32",
    )
    return {
        "path": str(out),
        "sha256": sha256,
        "shape": list(logits.shape),
        "compute_seconds": round(computed, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }


def check_teacher_data(
    folder: Path,
    config: dict,
    dataset: str | None,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    """Refuse a teacher run made on another dataset, input shape or number of classes."""
    recorded = config.get("dataset")
    if dataset is not None and recorded is not None and recorded != dataset:
        raise KDistillError(
            f"the teacher {folder} was trained on {recorded}, not {dataset}: distill on "
            f"--dataset {recorded}, or use a teacher trained on {dataset}"
        )
    shape = config.get("input_shape")
    if shape is not None and list(shape) != list(input_shape):
        raise KDistillError(
            f"the teacher {folder} takes inputs of shape {tuple(shape)}, the data are "
            f"{tuple(input_shape)}: use a teacher trained on this dataset"
        )
    classes = config.get("num_classes")
    if classes is not None and classes != num_classes:
        raise KDistillError(
            f"the teacher {folder} predicts {classes} classes, the data have {num_classes}: "
            "use a teacher trained on this dataset"
        )


def load_state_dict_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``state_dict`` saved by ``torch.save`` (or as safetensors) into ``model``."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, damaged archives, safetensors errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KDistillError(
            f"cannot load weights from {path} (only plain state_dicts load): {first_line}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ...} wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KDistillError(f"{path} does not hold a state_dict (a dict of tensors)")
    _load_fitting(
        model, state, f"the weights in {path} do not fit the model", "check --teacher-model"
    )
    return model


def _load_fitting(model: nn.Module, state: dict, what: str, fix: str = "") -> None:
    """``model.load_state_dict(state)``, or one line saying which tensors do not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or resized:
        raise KDistillError(
            f"{what}: missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes "
            f"{resized[:3]}; {fix or 'the folder was changed after the run: train it again'}"
        )
    model.load_state_dict(state)


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
