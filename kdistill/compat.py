"""Configs saved by any kdistill version, and the one answer to "is this the same run?".

A run folder's ``config.json`` and a checkpoint's config were written by the version that made
the run. :func:`current_run_config` and :func:`current_train_config` bring them to today's
form: a field added since then gets the value that reproduces how the run was made
(:data:`RUN_ADDED`, :data:`TRAIN_ADDED`), and the top-level ``temperature`` and ``alpha`` of
configs saved before losses were objects become the arguments of the ``"hinton"`` loss (for a
run with a teacher; a run without one trained on cross-entropy, whatever they said).

Whether two configs describe the same run, to resume it or to reuse a finished one, is decided
by :func:`config_differences` alone, over the explicit field lists :data:`RUN_IDENTITY` and
:data:`TRAIN_IDENTITY`. A field added to ``RunSpec`` or ``TrainConfig`` must be added to one of
them (and to the ``*_ADDED`` defaults); a test checks that none is forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from kdistill.losses.registry import LOSSES, default_loss, make_loss

# RunSpec fields that make a run what it is. ``train`` stands for every TRAIN_IDENTITY field.
RUN_IDENTITY = (
    "model", "dataset", "data_dir", "teachers", "teacher_model", "drop_classes", "keep_classes",
    "train_fraction", "holdout_fraction", "teacher_logits", "train",
)  # fmt: skip
# Saved beside them in config.json but derived from them (the data set decides the shapes).
RUN_DERIVED = ("kind", "input_shape", "num_classes")
# RunSpec fields added after the first release: the value runs made before them had in effect.
RUN_ADDED: dict[str, Any] = {"teacher_model": None, "holdout_fraction": 0.0, "teacher_logits": None}

TRAIN_IDENTITY = (
    "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "lr_decay",
    "max_norm", "grad_clip", "jitter", "loss", "loss_args", "val_fraction", "patience", "seed",
    "eval_batch_size", "test_every", "cache_teacher_logits", "cache_jitter_views", "bf16",
    "device",
)  # fmt: skip
# (runs made before cache_jitter_views ran a jittered transfer set's teacher online)
TRAIN_ADDED: dict[str, Any] = {
    "lr_decay": 1.0, "grad_clip": None, "test_every": 1, "cache_jitter_views": False,
}  # fmt: skip
# TrainConfig fields of configs saved before the loss was an object ("loss" and "loss_args").
TRAIN_LEGACY = ("temperature", "alpha")

_MISSING = "<not saved>"


def resolve_loss(
    name: str | None, arguments: Mapping[str, Any] | None, *, distilling: bool
) -> tuple[str, dict[str, Any]]:
    """The loss a config means: its name (the default when None) and all its arguments.

    A registered loss is built (which validates the arguments) and reports every argument,
    defaults included, so ``{}`` and ``{"temperature": 1.0, "alpha": 1.0}`` compare equal.
    """
    name = name or default_loss(distilling)
    arguments = dict(arguments or {})
    if name in LOSSES:
        arguments = make_loss(name, **arguments).arguments()
    return name, arguments


def current_train_config(saved: Mapping[str, Any], *, distilling: bool) -> dict[str, Any]:
    """A ``TrainConfig`` dict saved by any version, in today's form (loss named and complete).

    Args:
        saved: the saved dict (a checkpoint's ``config`` or config.json's ``train``).
        distilling: whether the run had a teacher (it decides the loss of an old config).
    """
    train = {key: value for key, value in saved.items() if key not in TRAIN_LEGACY}
    for key, value in TRAIN_ADDED.items():
        train.setdefault(key, value)
    if "loss" not in saved and distilling:  # saved before losses were objects
        legacy = {key: saved[key] for key in TRAIN_LEGACY if key in saved}
        train["loss"], train["loss_args"] = "hinton", legacy
    train["loss"], train["loss_args"] = resolve_loss(
        train.get("loss"), train.get("loss_args"), distilling=distilling
    )
    if not (distilling and train.get("jitter")):
        # it changes only a distillation on a jittered transfer set: elsewhere every version's
        # run is the same run whatever it says
        train["cache_jitter_views"] = True
    return train


def current_run_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A run's ``config.json`` (or ``asdict(RunSpec)``) saved by any version, in today's form."""
    run = dict(saved)
    for key, value in RUN_ADDED.items():
        run.setdefault(key, value)
    distilling = bool(run.get("teachers")) or run.get("teacher_logits") is not None
    run["train"] = current_train_config(run.get("train", {}), distilling=distilling)
    return run


def config_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    distilling: bool | None = None,
    ignore: Collection[str] = (),
) -> list[str]:
    """The identity fields on which two configs differ, as ``"field: saved -> current"``.

    An empty list means the same run. Both configs may come from any version. They are run
    configs (config.json, ``asdict(RunSpec)``), or train configs (a checkpoint's, or
    ``asdict(TrainConfig)``) when ``distilling`` is given.

    Args:
        ignore: fields not compared, e.g. ``("data_dir", "train.device")``.
    """
    before, after = _identity(saved, distilling), _identity(current, distilling)
    return [
        f"{key}: {before.get(key, _MISSING)!r} -> {after.get(key, _MISSING)!r}"
        for key in sorted(before.keys() | after.keys(), key=_field_order)
        if key not in ignore and before.get(key, _MISSING) != after.get(key, _MISSING)
    ]


def describe_differences(differences: list[str], limit: int = 3) -> str:
    """The first few differences on one line, for an error message."""
    shown = "; ".join(differences[:limit])
    return shown + (f"; and {len(differences) - limit} more" if len(differences) > limit else "")


def _identity(config: Mapping[str, Any], distilling: bool | None) -> dict[str, Any]:
    """The identity fields of a config, flat (``train.lr``), as JSON would give them back."""
    if "train" in config:
        run = current_run_config(config)
        flat = {key: run[key] for key in RUN_IDENTITY if key != "train" and key in run}
        train = run["train"]
        prefix = "train."
    else:
        if distilling is None:
            raise TypeError("comparing train configs needs distilling=True/False")
        flat, train, prefix = {}, current_train_config(config, distilling=distilling), ""
    flat.update({prefix + key: train[key] for key in TRAIN_IDENTITY if key in train})
    return json.loads(json.dumps(flat))  # tuples as lists, as a saved config has them


def _field_order(key: str) -> int:
    """Differences are listed in the order of the field lists."""
    order = [*RUN_IDENTITY, *(f"train.{k}" for k in TRAIN_IDENTITY), *TRAIN_IDENTITY]
    return order.index(key) if key in order else len(order)
