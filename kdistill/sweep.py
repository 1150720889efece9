"""Sweeps: one student distilled for every (temperature, alpha, seed) cell of a grid.

A sweep is data (:class:`Sweep`: a base :class:`~kdistill.runs.RunSpec` and the grid of the
``"hinton"`` loss's temperature and alpha); each cell is an ordinary run folder made by
:func:`~kdistill.runs.execute`, so the one training loop does all the work. The loop works from
the teacher's raw logits, which depend on neither T nor alpha: they are computed once per
transfer set (or read once from a teacher-logits file) and every cell trains from that one
cache. A sweep is resumable: finished cells are read back, a cell killed mid-run continues from
its last checkpoint. It writes ``sweep.csv`` (one row per cell and seed) and ``heatmap.png``
(mean test errors over seeds, best cell marked).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from kdistill.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    check_folder_path,
    has_checkpoint,
    make_folder,
)
from kdistill.errors import KDistillError
from kdistill.losses import make_loss
from kdistill.models import build_model
from kdistill.runs import (
    RunSpec,
    cached_dataset,
    check_same_logits_file,
    check_same_run,
    execute,
    is_complete,
    load_teacher,
    open_teacher_logits,
    transfer_split,
    weights_sha256,
)
from kdistill.train import predict_logits, resolve_device

SWEPT_LOSS = "hinton"  # the loss whose temperature and alpha a sweep varies
CSV_COLUMNS = (
    "temperature", "alpha", "seed", "test_errors", "test_examples", "test_accuracy",
    "test_loss", "val_errors", "val_examples", "epochs_run", "train_seconds", "run",
)  # fmt: skip


@dataclass
class Sweep:
    """A grid of distillation runs: ``base`` with every T, alpha and ``seeds`` seeds.

    The base's loss is ``"hinton"`` (or unnamed, which means it); each cell sets its
    ``temperature`` and ``alpha``. The seeds are ``base.train.seed``, ``+1``, ...
    ``+ seeds - 1``.
    """

    base: RunSpec
    temperatures: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 20.0])
    alphas: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    seeds: int = 1

    def validate(self) -> None:
        """Raise a clear error on an empty grid, a bad T or alpha, or no teacher."""
        if not self.temperatures:
            raise KDistillError("the temperature grid is empty: give e.g. --temperature 1,4,20")
        if not self.alphas:
            raise KDistillError("the alpha grid is empty: give e.g. --alpha 0.1,0.5,0.9")
        if self.seeds < 1:
            raise KDistillError(f"--seeds must be >= 1, got {self.seeds}")
        if self.base.train.loss not in (None, SWEPT_LOSS):
            raise KDistillError(
                f"a sweep varies the {SWEPT_LOSS!r} loss's temperature and alpha; the base "
                f"run's loss is {self.base.train.loss!r}"
            )
        for t in self.temperatures:  # the loss checks its arguments
            make_loss(SWEPT_LOSS, **{**self.base.train.loss_args, "temperature": t})
        for a in self.alphas:
            make_loss(SWEPT_LOSS, **{**self.base.train.loss_args, "alpha": a})
        if len(set(self.temperatures)) != len(self.temperatures):
            raise KDistillError(f"repeated temperature in the grid {self.temperatures}")
        if len(set(self.alphas)) != len(self.alphas):
            raise KDistillError(f"repeated alpha in the grid {self.alphas}")
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

    def cells(self) -> list[tuple[str, RunSpec]]:
        """``(folder name, run spec)`` of every cell, T-major."""
        cells = []
        for t in self.temperatures:
            for a in self.alphas:
                for i in range(self.seeds):
                    seed = self.base.train.seed + i
                    args = {**self.base.train.loss_args, "temperature": float(t), "alpha": float(a)}
                    train = replace(self.base.train, loss=SWEPT_LOSS, loss_args=args, seed=seed)
                    cells.append((cell_name(t, a, seed), replace(self.base, train=train)))
        return cells


def cell_name(temperature: float, alpha: float, seed: int) -> str:
    """The folder of one cell, e.g. ``T4-alpha0.5-seed0``."""
    return f"T{temperature:g}-alpha{alpha:g}-seed{seed}"


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
    """Run every cell of ``sweep`` not yet done in ``out``; write sweep.csv and heatmap.png.

    Everything that can be checked (the grid, the data, the model spec, the teachers) is
    checked before ``out`` is written to. ``trust_code`` as in :func:`~kdistill.runs.execute`.

    Returns:
        One row per cell and seed (the rows of ``sweep.csv``).
    """
    sweep.validate()
    out = Path(out)
    check_folder_path(out)
    if (out / "config.json").is_file():
        raise KDistillError(f"{out} holds a run, not a sweep: choose a new --out")
    base = sweep.base
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
    make_folder(out)
    atomic_write_json(out / "sweep.json", _jsonable(sweep))
    logits_by_seed: dict[int | None, torch.Tensor] = {}
    logits_file = open_teacher_logits(base, dataset) if base.teacher_logits else None
    rows: list[dict] = []
    cells = sweep.cells()
    for number, (name, spec) in enumerate(cells, start=1):
        folder = out / name
        if is_complete(folder):
            check_same_run(folder, spec, hashes)
            if logits_file is not None:
                check_same_logits_file(folder, logits_file, resume=True)
            metrics = json.loads((folder / "metrics.json").read_text())
        else:
            resume = has_checkpoint(folder)
            print(f"[{number}/{len(cells)}] {name}" + (" (resuming)" if resume else ""), flush=True)
            teacher_logits = logits_file
            if logits_file is None and _can_share_logits(spec):
                # The transfer set depends on the seed only when it is a random fraction.
                key = spec.train.seed if spec.train_fraction < 1 else None
                if key not in logits_by_seed:
                    logits_by_seed[key] = _teacher_logits(spec, dataset, teachers)
                teacher_logits = logits_by_seed[key]
            metrics = execute(
                spec,
                folder,
                resume=resume,
                progress=progress,
                download=download,
                argv=argv,
                teacher_logits=teacher_logits,
                tensorboard=tensorboard,
                trust_code=trust_code,
            )
        rows.append(_row(name, spec, metrics))
        write_csv(out / "sweep.csv", rows)  # a partial table survives a kill
    plot_sweep(rows, out / "heatmap.png")
    return rows


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


def _row(name: str, spec: RunSpec, metrics: dict) -> dict:
    test = metrics["test"]
    return {
        "temperature": spec.train.loss_args["temperature"],
        "alpha": spec.train.loss_args["alpha"],
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


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Write the sweep's rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean (and spread) of errors over seeds, one row per (T, alpha), best first.

    Cells are ranked by their validation errors when every cell held out a validation split
    (``--val-fraction``): choosing by test errors would fit the test set. Test errors are shown
    beside them.
    """
    by_val = bool(rows) and all(row.get("val_errors") is not None for row in rows)
    groups: dict[tuple[float, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["temperature"], row["alpha"]), []).append(row)
    summary = []
    for (t, a), cell in groups.items():
        errors = [r["test_errors"] for r in cell]
        entry = {"T": t, "alpha": a, "seeds": len(errors)}
        if by_val:
            entry["mean_val_errors"] = round(statistics.fmean(r["val_errors"] for r in cell), 2)
        entry.update(
            mean_test_errors=round(statistics.fmean(errors), 2),
            std=round(statistics.stdev(errors), 2) if len(errors) > 1 else None,
            min=min(errors),
            max=max(errors),
        )
        summary.append(entry)
    rank = "mean_val_errors" if by_val else "mean_test_errors"
    return sorted(summary, key=lambda r: (r[rank], r["mean_test_errors"], r["T"], r["alpha"]))


def plot_sweep(rows: Sequence[dict], path: str | Path) -> Path:
    """Heat map of mean errors over seeds (validation when held out, else test): rows T, columns
    alpha, best cell marked."""
    from kdistill.reports import plot_heatmap

    temperatures = sorted({r["temperature"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    summary = summarize(rows)
    key = "mean_val_errors" if summary and "mean_val_errors" in summary[0] else "mean_test_errors"
    means = {(s["T"], s["alpha"]): s[key] for s in summary}
    grid = [[means.get((t, a), float("nan")) for a in alphas] for t in temperatures]
    seeds = max(s["seeds"] for s in summarize(rows))
    return plot_heatmap(
        grid,
        [f"{t:g}" for t in temperatures],
        [f"{a:g}" for a in alphas],
        path,
        xlabel="alpha (weight of the soft targets)",
        ylabel="temperature T",
        title=f"{'Validation' if key == 'mean_val_errors' else 'Test'} errors of the student, "
        f"mean over {seeds} seed(s)",
    )
