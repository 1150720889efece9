"""Sweeps: one student distilled for every combination of a loss's arguments, and every seed.

A sweep is data (:class:`Sweep`: a base :class:`~kdistill.runs.RunSpec`, the registered loss it
distils with, and a list of values for each swept argument of that loss); its grid is the
Cartesian product of those lists. Each cell is an ordinary run folder made by
:func:`~kdistill.runs.execute`, so the one training loop does all the work, and its
``config.json`` records the loss and all its arguments. The loop works from the teacher's *raw*
logits, which depend on no loss argument: they are computed once per transfer set (or read
once from a teacher-logits file) and every cell trains from that one cache. A sweep is
resumable: finished cells are read back (after :func:`~kdistill.runs.check_same_run`, i.e.
:func:`kdistill.compat.config_differences`, says they are the same run), a cell killed mid-run
continues from its last checkpoint. It writes ``sweep.csv`` (one row per cell and seed, one
column per swept argument) and a figure of the mean errors over seeds: ``heatmap.png`` where
two (or more) arguments take several values, ``lineplot.png`` where one does.

The ``"hinton"`` loss (the default) sweeps ``temperature`` and ``alpha`` over
:data:`HINTON_GRID` unless they are given, so ``Sweep(base, temperatures=[2, 8])`` means what it
always has.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    check_folder_path,
    has_checkpoint,
    make_folder,
)
from kdistill.data import Dataset
from kdistill.errors import KDistillError
from kdistill.losses import LOSSES, check_ensemble_support, make_loss
from kdistill.losses.base import constructor_parameters
from kdistill.losses.registry import DISTILLATION_DEFAULT, parse_literal
from kdistill.models import build_model
from kdistill.runs import (
    RunSpec,
    cached_dataset,
    check_same_logits_file,
    check_same_run,
    is_complete,
    load_teacher,
    open_teacher_logits,
    run_or_resume,
    transfer_split,
    weights_sha256,
)
from kdistill.teacher_logits import TeacherLogitsFile
from kdistill.train import predict_logits, resolve_device

# The grid of the "hinton" loss's arguments that a sweep does not name (as before losses had
# other arguments): every T by every alpha.
HINTON_GRID: dict[str, list[float]] = {
    "temperature": [1.0, 2.0, 4.0, 8.0, 20.0],
    "alpha": [0.1, 0.5, 0.9],
}
# The columns of sweep.csv after one column per swept argument.
RESULT_COLUMNS = (
    "seed", "test_errors", "test_examples", "test_accuracy", "test_loss", "val_errors",
    "val_examples", "epochs_run", "train_seconds", "run",
)  # fmt: skip
# How an argument is named in folder names and in the summary table (others: their own name).
SHORT_NAMES = {"temperature": "T"}
_LABEL = re.compile(r"[A-Za-z0-9._+-]+")


@dataclass
class Sweep:
    """A grid of distillation runs: ``base`` with every combination of the loss's arguments.

    The loss is ``base.train.loss`` (``"hinton"`` when unnamed); ``base.train.loss_args`` are
    the arguments every cell shares, and ``grid`` maps each swept argument to its values,
    e.g. ``{"beta": [1, 2, 8]}``. ``temperatures`` and ``alphas`` are ``grid["temperature"]``
    and ``grid["alpha"]`` by their old names; for the ``"hinton"`` loss each defaults to
    :data:`HINTON_GRID`. The seeds are ``base.train.seed``, ``+1``, ... ``+ seeds - 1``.
    """

    base: RunSpec
    temperatures: list[float] | None = None
    alphas: list[float] | None = None
    seeds: int = 1
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def loss(self) -> str:
        """The name of the loss every cell distils with."""
        return self.base.train.loss or DISTILLATION_DEFAULT

    def arguments(self) -> dict[str, list[Any]]:
        """Every swept argument and its values, in the order of the loss's arguments.

        Raises:
            KDistillError: an unknown loss, an argument the loss does not take (the valid ones
                are listed), an argument given twice, an empty list of values.
        """
        make_loss(self.loss, **self.base.train.loss_args)  # an unknown loss or fixed argument
        given = {key.replace("-", "_"): list(values) for key, values in self.grid.items()}
        for key, values in (("temperature", self.temperatures), ("alpha", self.alphas)):
            if values is not None:
                if key in given:
                    raise KDistillError(f"the {key} grid is given twice: give it once")
                given[key] = list(values)
        if self.loss == "hinton":
            for key, values in HINTON_GRID.items():
                given.setdefault(key, list(values))
        valid = constructor_parameters(LOSSES[self.loss])
        for key, values in given.items():
            if key not in valid:
                raise KDistillError(
                    f"loss {self.loss!r} takes no argument {key!r}; its arguments are "
                    f"{', '.join(valid) or 'none'}"
                )
            if not values:
                example = {"temperature": "--temperature 1,4,20", "alpha": "--alpha 0.1,0.5,0.9"}
                raise KDistillError(
                    f"the {key} grid is empty: give e.g. "
                    + example.get(key, f"--loss-arg {key}=VALUE1,VALUE2")
                )
        return {key: given[key] for key in valid if key in given}

    def validate(self) -> None:
        """Raise a clear error on a bad grid (every cell's loss is built), or no teacher."""
        if self.seeds < 1:
            raise KDistillError(f"--seeds must be >= 1, got {self.seeds}")
        arguments = self.arguments()
        if not self.base.teachers and self.base.teacher_logits is None:
            raise KDistillError(
                "a sweep distills from a teacher: give --teacher RUN or --teacher-logits FILE"
            )
        for teacher in self.base.teachers:
            path = Path(teacher)
            if path.is_dir() and not (path / "model.safetensors").is_file():
                raise KDistillError(f"teacher run {teacher} has not finished (no model)")
            if not path.exists():
                raise KDistillError(f"teacher {teacher} does not exist")
        self.base.train.validate()
        for values in itertools.product(*arguments.values()):  # the loss checks every cell
            cell = dict(zip(arguments, values, strict=True))
            train = replace(
                self.base.train, loss=self.loss, loss_args={**self.base.train.loss_args, **cell}
            )
            check_ensemble_support(
                make_loss(train.loss, **train.loss_args), len(self.base.teachers)
            )
            train.validate()
        for key, values in arguments.items():  # values the loss takes, each its own folder
            labels = [_label(key, value) for value in values]
            if len(set(labels)) != len(labels):
                raise KDistillError(f"repeated {key} in the grid {values}")

    def cells(self) -> list[tuple[str, RunSpec]]:
        """``(folder name, run spec)`` of every cell and seed, the first argument slowest."""
        return self._cells(self.arguments(), self.seeds)

    def _cells(self, arguments: dict[str, list], seeds: int) -> list[tuple[str, RunSpec]]:
        cells = []
        for values in itertools.product(*arguments.values()):
            cell = dict(zip(arguments, values, strict=True))
            args = {**self.base.train.loss_args, **cell}
            for i in range(seeds):
                seed = self.base.train.seed + i
                train = replace(self.base.train, loss=self.loss, loss_args=args, seed=seed)
                cells.append((cell_name(cell, seed), replace(self.base, train=train)))
        return cells


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """Repeated ``--loss-arg KEY=V1,V2,...`` as ``{KEY: [V1, V2, ...]}``.

    Each value is read as by :func:`~kdistill.losses.registry.parse_literal` (a number, a
    boolean, ``none``, else a string, which the loss then accepts or refuses).
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key.isidentifier():
            raise KDistillError(
                f"--loss-arg takes KEY=VALUE[,VALUE...], e.g. beta=1,2,8; got {item!r}"
            )
        if key in grid:
            raise KDistillError(f"--loss-arg {key} is given twice: list its values in one")
        grid[key] = [parse_literal(part.strip()) for part in text.split(",") if part.strip()]
    return grid


def cell_name(arguments: Mapping[str, Any], seed: int) -> str:
    """The folder of one cell, e.g. ``T4-alpha0.5-seed0`` or ``beta8-seed0``."""
    parts = [SHORT_NAMES.get(key, key) + _label(key, value) for key, value in arguments.items()]
    return "-".join([*parts, f"seed{seed}"])


def _label(key: str, value: Any) -> str:
    """A value as it appears in a folder name (``4`` for 4.0, ``true``, ``none``)."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    if not _LABEL.fullmatch(text):
        raise KDistillError(
            f"{key}={value!r} cannot name a run folder: a swept value is a number, true, false, "
            "none or a word of letters, digits, '.', '_', '+', '-'"
        )
    return text


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    progress: bool = True,
    download: bool = False,
    argv: list[str] | None = None,
    tensorboard: bool = False,
    trust_code: bool = False,
) -> list[dict]:
    """Run every cell of ``sweep`` not yet done in ``out``; write sweep.csv and its figure.

    Everything that can be checked (the grid: every cell's loss, the data, the model spec, the
    teachers) is checked before ``out`` is written to. ``trust_code`` as in
    :func:`~kdistill.runs.execute`.

    Returns:
        One row per cell and seed (the rows of ``sweep.csv``).
    """
    sweep.validate()
    out = Path(out)
    _check_sweep_folder(out)
    inputs = _load_inputs(sweep.base, download, trust_code)
    arguments = sweep.arguments()
    make_folder(out)  # everything is checked: the sweep starts
    record = {**_jsonable(sweep), "loss": sweep.loss, "arguments": arguments}
    atomic_write_json(out / "sweep.json", json.loads(json.dumps(record)))
    run_args = dict(
        progress=progress,
        download=download,
        argv=argv,
        tensorboard=tensorboard,
        trust_code=trust_code,
    )
    rows: list[dict] = []
    cells = sweep.cells()
    for number, (name, spec) in enumerate(cells, start=1):
        progress_label = f"[{number}/{len(cells)}] {name}"
        metrics = _run_cell(spec, out / name, inputs, progress_label, run_args)
        rows.append(_row(name, spec, metrics, list(arguments)))
        write_csv(out / "sweep.csv", rows)  # a partial table survives a kill
    plot_sweep(rows, out / figure_name(rows))
    return rows


@dataclass
class _SweepInputs:
    """What every cell of a sweep shares, loaded once: the data, teachers, logits."""

    dataset: Dataset
    teachers: list[nn.Module]
    teacher_sha256: list[str]
    logits_file: TeacherLogitsFile | None
    # the teachers' logits of a transfer set, by seed (None: the same for every seed)
    logits_by_seed: dict[int | None, torch.Tensor] = field(default_factory=dict)


def _check_sweep_folder(out: Path) -> None:
    """Refuse an ``out`` that cannot hold a sweep (a bad path, or a single run's folder)."""
    check_folder_path(out)
    if (out / "config.json").is_file():
        raise KDistillError(f"{out} holds a run, not a sweep: choose a new --out")


def _load_inputs(base: RunSpec, download: bool, trust_code: bool) -> _SweepInputs:
    """Check ``base`` against its data, model spec and teachers, and load what cells share.

    A bad model spec, a missing or unfit teacher or teacher-logits file fails here, before
    the sweep's folder is written to.
    """
    base.validate()
    dataset = cached_dataset(base.dataset, base.data_dir, download)
    base.validate(dataset.num_classes)
    build_model(base.model, dataset.input_shape, dataset.num_classes)  # a bad spec fails here
    teachers = [
        load_teacher(
            path,
            base.teacher_model,
            dataset.input_shape,
            dataset.num_classes,
            resolve_device(base.train.device),
            dataset=base.dataset,
            trust_code=trust_code,
        )
        for path in base.teachers
    ]
    hashes = [weights_sha256(t) for t in base.teachers]
    logits_file = open_teacher_logits(base, dataset) if base.teacher_logits else None
    return _SweepInputs(dataset, teachers, hashes, logits_file)


def _run_cell(
    spec: RunSpec, folder: Path, inputs: _SweepInputs, progress_label: str, run_args: dict
) -> dict:
    """The metrics of one cell (:func:`~kdistill.runs.run_or_resume`: a finished run is checked
    and kept, an interrupted one checked and resumed, any other run).

    ``progress_label`` is printed before a cell is run; ``run_args`` go to
    :func:`~kdistill.runs.execute`.
    """
    teacher_logits = None
    if not is_complete(folder):  # teacher logits only for a cell that trains
        print(progress_label + (" (resuming)" if has_checkpoint(folder) else ""), flush=True)
        teacher_logits = _cell_teacher_logits(spec, inputs)
    same_cell = functools.partial(_check_same_cell, inputs=inputs)
    metrics, _ = run_or_resume(
        spec, folder, same_run=same_cell, teacher_logits=teacher_logits, **run_args
    )
    return metrics


def _check_same_cell(folder: Path, spec: RunSpec, inputs: _SweepInputs) -> None:
    """Raise unless ``folder`` holds this cell's run: compat's one rule, the teachers' weights
    and the teacher-logits file."""
    check_same_run(folder, spec, inputs.teacher_sha256)
    if inputs.logits_file is not None:
        check_same_logits_file(folder, inputs.logits_file, resume=True)


def _cell_teacher_logits(
    spec: RunSpec, inputs: _SweepInputs
) -> torch.Tensor | TeacherLogitsFile | None:
    """The teacher logits a cell distils from: the sweep's file, logits shared by the cells
    of one transfer set (computed once), or None where fit must compute them itself."""
    if inputs.logits_file is not None:
        return inputs.logits_file
    if not _can_share_logits(spec):
        return None
    # The transfer set depends on the seed only when it is a random fraction.
    key = spec.train.seed if spec.train_fraction < 1 else None
    if key not in inputs.logits_by_seed:
        inputs.logits_by_seed[key] = _teacher_logits(spec, inputs.dataset, inputs.teachers)
    return inputs.logits_by_seed[key]


def _can_share_logits(spec: RunSpec) -> bool:
    """Shared logits equal what fit would compute itself only without jitter or a val split."""
    train = spec.train
    return train.jitter == 0 and train.val_fraction == 0 and train.cache_teacher_logits


def _teacher_logits(spec: RunSpec, dataset, teachers: list) -> torch.Tensor:
    transfer = transfer_split(dataset.train, spec)
    return predict_logits(
        teachers[0] if len(teachers) == 1 else teachers,
        transfer.images,
        spec.train.eval_batch_size,
    )


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(asdict(obj)))


def _row(name: str, spec: RunSpec, metrics: dict, swept: list[str]) -> dict:
    """One row of sweep.csv: the swept arguments' values (as the loss holds them), the scores."""
    given = spec.train.loss_args
    held = make_loss(spec.train.loss, **given).arguments()  # e.g. a temperature 4 as 4.0
    test = metrics["test"]
    return {
        **{key: held.get(key, given[key]) for key in swept},
        "seed": spec.train.seed,
        "test_errors": test["errors"],
        "test_examples": test["examples"],
        "test_accuracy": round(test["accuracy"], 6),
        "test_loss": round(test["loss"], 6),
        "val_errors": metrics["val"]["errors"] if "val" in metrics else None,
        "val_examples": metrics["val"]["examples"] if "val" in metrics else None,
        "epochs_run": metrics["epochs_run"],
        "train_seconds": metrics["train_seconds"],
        "run": name,
    }


def swept_arguments(rows: Sequence[Mapping]) -> list[str]:
    """The argument columns of sweep rows: every column that is not a result."""
    return [key for key in rows[0] if key not in RESULT_COLUMNS] if rows else []


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Write the sweep's rows as CSV, atomically: one column per swept argument, then results."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*swept_arguments(rows), *RESULT_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean (and spread) of errors over seeds, one row per cell of the grid, best first.

    One column per swept argument (the temperature as ``T``). Cells are ranked by their
    validation errors when every cell held out a validation split (``--val-fraction``):
    choosing by test errors would fit the test set. Test errors are shown beside them.
    """
    by_val = bool(rows) and all(row.get("val_errors") is not None for row in rows)
    swept = swept_arguments(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in swept), []).append(row)
    summary = []
    for values, cell in groups.items():
        errors = [r["test_errors"] for r in cell]
        entry = {SHORT_NAMES.get(k, k): v for k, v in zip(swept, values, strict=True)}
        entry["seeds"] = len(errors)
        if by_val:
            entry["mean_val_errors"] = round(statistics.fmean(r["val_errors"] for r in cell), 2)
        entry.update(
            mean_test_errors=round(statistics.fmean(errors), 2),
            std=round(statistics.stdev(errors), 2) if len(errors) > 1 else None,
            min=min(errors),
            max=max(errors),
        )
        summary.append((values, entry))
    rank = "mean_val_errors" if by_val else "mean_test_errors"
    summary.sort(key=lambda p: (p[1][rank], p[1]["mean_test_errors"], *map(_order, p[0])))
    return [entry for _, entry in summary]


def _order(value: Any) -> tuple:
    """Sorts numbers by value, before any other value (by its text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def varied_arguments(rows: Sequence[Mapping]) -> list[str]:
    """The swept arguments that take more than one value in ``rows``."""
    return [key for key in swept_arguments(rows) if len({_order(r[key]) for r in rows}) > 1]


def figure_name(rows: Sequence[Mapping]) -> str:
    """``heatmap.png`` where two or more arguments vary, else ``lineplot.png``."""
    return "heatmap.png" if len(varied_arguments(rows)) >= 2 else "lineplot.png"


def plot_sweep(rows: Sequence[dict], path: str | Path) -> Path:
    """Mean errors over seeds (validation when held out, else test), best cell marked.

    Two varied arguments: a heat map, rows the first (e.g. T), columns the second (e.g.
    alpha). More: the same heat map, each cell the best over the other arguments' values. One
    (or none): a line plot over it (over the first swept argument).
    """
    from kdistill.reports import plot_heatmap, plot_lines

    summary = summarize(rows)
    key = "mean_val_errors" if summary and "mean_val_errors" in summary[0] else "mean_test_errors"
    kind = "Validation" if key == "mean_val_errors" else "Test"
    seeds = max(s["seeds"] for s in summary)
    varied = varied_arguments(rows) or swept_arguments(rows)[:1]
    columns = [SHORT_NAMES.get(k, k) for k in varied]
    title = f"{kind} errors of the student, mean over {seeds} seed(s)"
    if len(varied) >= 2:
        best: dict[tuple, float] = {}
        for entry in summary:
            cell = (_order(entry[columns[0]]), _order(entry[columns[1]]))
            best[cell] = min(best.get(cell, math.inf), entry[key])
        ys, xs = (sorted({r[k] for r in rows}, key=_order) for k in varied[:2])
        grid = [[best.get((_order(y), _order(x)), math.nan) for x in xs] for y in ys]
        if len(varied) > 2:
            title += f"\nbest over {', '.join(columns[2:])}"
        return plot_heatmap(
            grid,
            [_label(varied[0], y) for y in ys],
            [_label(varied[1], x) for x in xs],
            path,
            xlabel=_axis_label(varied[1]),
            ylabel=_axis_label(varied[0]),
            title=title,
        )
    if varied:
        values = sorted({r[varied[0]] for r in rows}, key=_order)
        means = {_order(e[columns[0]]): e[key] for e in summary}
        ys = [means[_order(v)] for v in values]
        labels, xlabel = [_label(varied[0], v) for v in values], _axis_label(varied[0])
    else:  # a loss without arguments swept: seeds only, one point
        values, ys, labels, xlabel = ["-"], [summary[0][key]], ["-"], "(no argument swept)"
    numeric = all(_order(v)[0] == 0 for v in values)
    xs = list(values) if numeric else list(range(len(values)))  # words: evenly spaced
    logx = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10  # e.g. T from 1 to 20
    return plot_lines(
        {f"mean over {seeds} seed(s)": (xs, ys)},
        path,
        xlabel=xlabel,
        ylabel=f"{kind.lower()} errors",
        title=title,
        logx=logx,
        xticks=(xs, labels),
    )


def _axis_label(argument: str) -> str:
    return {
        "temperature": "temperature T",
        "alpha": "alpha (weight of the soft targets)",
    }.get(argument, argument)
