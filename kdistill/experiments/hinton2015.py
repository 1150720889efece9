"""Hinton, Vinyals & Dean (2015), every experiment that runs on public data, paper vs measured.

The experiments are data: :func:`plan` turns a :class:`Profile` into an ordered set of
:class:`~kdistill.runs.RunSpec`, one folder each, all run by :func:`kdistill.runs.execute`.
:func:`reproduce` runs them in order (a finished run is checked and skipped, an interrupted one
resumes from its checkpoint) and then :func:`write_report` puts each measured figure beside the
paper's in ``REPORT.md``, ``results.json`` and the PNGs.

1. Main table: teacher 784-1200-1200-10 (dropout, max-norm, 2 px jitter), student 784-800-800-10
   alone, the same student distilled at T = 20.
2. Width x temperature: students of 800, 300, 30 units distilled at several T.
3. A transfer set without 3s, then the 3's output bias raised; the shift chosen on the test set
   (as in the paper) and on a held-out part of the training set that no model trained on.
4. A transfer set of only 7s and 8s, then the 7 and 8 biases lowered; chosen the same two ways.
5. An ensemble of N models distilled into one model of the same size (MNIST, Fashion-MNIST).
6. Soft targets as a regulariser: a student on 3% of the data, hard labels vs soft targets.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from kdistill.checkpoint import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    has_checkpoint,
)
from kdistill.compat import config_differences, describe_differences
from kdistill.errors import KDistillError
from kdistill.reports import (
    format_table,
    plot_curves,
    plot_grouped_bars,
    plot_lines,
    plot_soft_targets,
)
from kdistill.runs import (
    RunSpec,
    cached_dataset,
    environment,
    execute,
    holdout_split,
    is_complete,
    load_run_model,
    read_history,
)
from kdistill.train import TrainConfig, predict_logits

TEACHER_MODEL = "mlp:1200x1200,dropout=0.5,input_dropout=0.2"
# The paper profile's teacher sees pixels in [-1, 1]: with them, SGD at lr 0.01 halved every
# 100 epochs reached 66 test errors by epoch 316 (runs/paper-teacher, 2026-11-26).
PAPER_TEACHER_MODEL = TEACHER_MODEL + ",input_mean=0.5,input_std=0.5"
MAIN_WIDTH = 800
MAIN_TEMPERATURE = 20.0
MAIN_LOSS_ARGS = {"temperature": MAIN_TEMPERATURE, "alpha": 0.9}  # the "hinton" loss's
OMITTED_CLASS = 3
KEPT_CLASSES = (7, 8)
SOFT_TARGET_TEMPERATURES = (1.0, 2.0, 5.0, 20.0)
# Bias shifts searched, in steps of 0.1; the paper's +3.5 and -7.6 lie well inside.
SHIFT_GRID = tuple(round(0.1 * i, 1) for i in range(0, 201))

# The paper's figures. Section 3 (MNIST) and, for experiments 5 and 6, the speech results of
# section 4 (Table 1: 58.9% -> 61.1% ensemble -> 60.8% distilled frame accuracy, so the
# distilled model keeps (60.8 - 58.9) / (61.1 - 58.9) = 86.4% of the gain; Table 2: 3% of the
# data, hard targets 44.5%, soft targets 57.0%, all the data 58.9%, so soft targets close
# (57.0 - 44.5) / (58.9 - 44.5) = 86.8% of the gap).
PAPER = {
    "teacher": 67,
    "student": 146,
    "distilled": 74,
    "omit3_errors": 206,
    "omit3_errors_on_3": 133,
    "omit3_shift": 3.5,
    "omit3_shifted_errors": 109,
    "omit3_shifted_errors_on_3": 14,
    "only78_error": 47.3,
    "only78_shift": -7.6,
    "only78_shifted_error": 13.2,
    "ensemble_gain_kept": round(100 * (60.8 - 58.9) / (61.1 - 58.9), 1),
    "small_gap_closed": round(100 * (57.0 - 44.5) / (58.9 - 44.5), 1),
}


# Members trained on hard labels without regularisation are very confident (logits far apart),
# and matching their mean soft targets at T = 20 starts with huge gradients: unclipped, the
# Fashion-MNIST ensemble's student diverged in its first epoch (training loss 121, then 148; every
# test example in one class). Clipping the gradient's norm keeps its first steps small.
ENSEMBLE_GRAD_CLIP = 1.0


@dataclass(frozen=True)
class Profile:
    """How much of the protocol to run: data, epochs, grids, ensemble size.

    ``data_fraction`` is the stratified part of the training set every run uses (1 = all of
    it). ``teacher_model`` is the teacher's spec and ``teacher`` its training.
    ``student`` trains on hard labels (student alone, ensemble members); ``distill`` is the
    student's optimiser and distillation settings; ``small`` the runs on ``small_fraction`` of
    the data (experiment 6), where the hard-label baseline may stop early on a validation split.
    """

    name: str
    data_fraction: float
    teacher_model: str
    teacher: TrainConfig
    student: TrainConfig
    distill: TrainConfig
    widths: tuple[int, ...]
    temperatures: tuple[float, ...]
    holdout_fraction: float
    ensemble_model: str
    ensemble_size: int
    ensemble_datasets: tuple[str, ...]
    small_fraction: float
    small: TrainConfig
    small_val_fraction: float
    small_patience: int
    note: str = ""


# Every student, alone or distilled, at any width: the same optimiser, so a comparison is fair.
STUDENT_OPTIMISER = functools.partial(TrainConfig, optimizer="adam", lr=1e-3, bf16=True)

PROFILES = {
    # Every experiment on a tenth of MNIST at a few epochs: minutes on 2 CPU cores. It shows the
    # directions (distillation helps; the bias shift repairs a missing class), not the figures.
    "quick": Profile(
        name="quick",
        data_fraction=0.1,
        teacher_model=TEACHER_MODEL,
        teacher=TrainConfig(epochs=40, lr=0.1, max_norm=3.5, jitter=2),
        student=STUDENT_OPTIMISER(epochs=12),
        distill=STUDENT_OPTIMISER(epochs=12, loss="hinton", loss_args=dict(MAIN_LOSS_ARGS)),
        widths=(800, 300, 30),
        temperatures=(4.0, 20.0),
        holdout_fraction=0.1,
        ensemble_model="mlp:100x100",
        ensemble_size=3,
        ensemble_datasets=("mnist", "fashion-mnist"),
        small_fraction=0.03,
        small=STUDENT_OPTIMISER(epochs=40),
        small_val_fraction=0.2,
        small_patience=8,
        note="a tenth of the training set and a few epochs: directions only, not the paper's "
        "figures",
    ),
    # The full protocol. The teacher's settings are those of
    # `kdistill train --dataset mnist --model mlp:1200x1200,dropout=0.5,input_dropout=0.2,
    #  input_mean=0.5,input_std=0.5 --max-norm 3.873 --jitter 2 --epochs 800 --lr 0.01
    #  --schedule exponential --lr-decay 0.99309 --bf16 --seed 0`, so such a run can be reused:
    # the paper's dropout 0.2/0.5, incoming weight vectors of squared length <= 15 (norm 3.873),
    # +-2 px jitter; lr halved every 100 epochs. The earlier recipe (cosine from lr 0.1, max-norm
    # 3.5, [0, 1] pixels) plateaued at 96 errors after 200 epochs and 86 after 600.
    # Students alone and distilled train with the same optimiser (Adam, lr 1e-3, cosine, 60
    # epochs): SGD at lr 0.02 (lr 0.1 blew up at T = 20) under-fitted the soft targets and ended
    # 28 errors behind its teacher; Adam for 60 epochs ended 4 behind a teacher of 81 errors,
    # 20 epochs 13 behind (scratch pilots, 2026-11-26). Every full-data run is scored once at
    # the end: nothing is chosen on the test set except the paper's own test-chosen bias
    # shifts, reported beside our held-out choice.
    "paper": Profile(
        name="paper",
        data_fraction=1.0,
        teacher_model=PAPER_TEACHER_MODEL,
        teacher=TrainConfig(
            epochs=800,
            lr=0.01,
            schedule="exponential",
            lr_decay=0.99309,  # halves every 100 epochs
            max_norm=3.873,  # sqrt(15): the paper's squared length <= 15
            jitter=2,
            bf16=True,
        ),
        student=STUDENT_OPTIMISER(epochs=60),
        distill=STUDENT_OPTIMISER(epochs=60, loss="hinton", loss_args=dict(MAIN_LOSS_ARGS)),
        widths=(800, 300, 30),
        temperatures=(1.0, 2.0, 2.5, 3.0, 4.0, 8.0, 20.0),
        holdout_fraction=0.1,
        # 300-300 members, not 800-800: 20 members of 800-800 would be ~80 of the ~160 minutes
        # of the whole protocol on 2 CPU cores; at 300-300 they are ~25.
        ensemble_model="mlp:300x300",
        ensemble_size=10,
        ensemble_datasets=("mnist", "fashion-mnist"),
        small_fraction=0.03,
        small=STUDENT_OPTIMISER(epochs=200),
        small_val_fraction=0.2,
        small_patience=30,
    ),
    # The protocol of the first committed paper run (docs/results/hinton2015, 2026-11-26),
    # kept so that its records stay reproducible: cosine from lr 0.1 for the teacher (96 test
    # errors), SGD students (lr 0.1 alone, 0.02 distilled: the distilled one under-fitted).
    "paper-v1": Profile(
        name="paper-v1",
        data_fraction=1.0,
        teacher_model=TEACHER_MODEL,
        teacher=TrainConfig(epochs=200, lr=0.1, max_norm=3.5, jitter=2),
        student=TrainConfig(epochs=60, lr=0.1),
        distill=TrainConfig(epochs=60, lr=0.02, loss="hinton", loss_args=dict(MAIN_LOSS_ARGS)),
        widths=(800, 300, 30),
        temperatures=(1.0, 2.0, 2.5, 3.0, 4.0, 8.0, 20.0),
        holdout_fraction=0.1,
        ensemble_model="mlp:300x300",
        ensemble_size=10,
        ensemble_datasets=("mnist", "fashion-mnist"),
        small_fraction=0.03,
        small=TrainConfig(epochs=200, lr=0.1),
        small_val_fraction=0.2,
        small_patience=30,
    ),
}


def student_model(width: int) -> str:
    """The paper's students: two hidden ReLU layers of ``width`` units, no regularisation."""
    return f"mlp:{width}x{width}"


def _tag(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", model.removeprefix("mlp:"))


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """The runs of one reproduction, by folder name (relative to the output folder), in order."""

    profile: Profile
    seeds: int
    data_dir: str | None = None
    runs: dict[str, RunSpec] = field(default_factory=dict)

    def add(self, key: str, spec: RunSpec) -> str:
        """Add a run (once: the same key must mean the same spec) and return its key."""
        if key in self.runs and differences(asdict(self.runs[key]), asdict(spec)):
            raise AssertionError(f"two different runs named {key}")
        self.runs.setdefault(key, spec)
        return key


def teacher_key() -> str:
    return "mnist/teacher/seed0"


def hard_key(dataset: str, model: str, seed: int) -> str:
    return f"{dataset}/hard-{_tag(model)}/seed{seed}"


def distill_key(width: int, temperature: float, seed: int) -> str:
    return f"mnist/distill-{width}x{width}-T{temperature:g}/seed{seed}"


def plan(profile: Profile, out: str | Path, data_dir: str | None = None, seeds: int = 1) -> Plan:
    """Every run of the reproduction as a RunSpec, teachers before their students."""
    if seeds < 1:
        raise KDistillError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out).resolve()
    p = profile
    result = Plan(profile, seeds, data_dir)
    base = {"dataset": "mnist", "data_dir": data_dir, "train_fraction": p.data_fraction}

    teacher = result.add(
        teacher_key(), RunSpec(model=p.teacher_model, train=replace(p.teacher, seed=0), **base)
    )
    teachers = [str(out / teacher)]
    main = student_model(MAIN_WIDTH)

    def distilled(seed: int, config: TrainConfig | None = None, **changes) -> RunSpec:
        return RunSpec(
            model=changes.pop("model", main),
            teachers=teachers,
            train=replace(config or p.distill, seed=seed),
            **{**base, **changes},
        )

    for seed in range(seeds):  # 1. main table, the cheap rows with every seed
        result.add(
            hard_key("mnist", main, seed),
            RunSpec(model=main, train=replace(p.student, seed=seed), **base),
        )
        result.add(distill_key(MAIN_WIDTH, MAIN_TEMPERATURE, seed), distilled(seed))
    for width in p.widths:  # 2. width x temperature, one seed, beside the width alone
        result.add(
            hard_key("mnist", student_model(width), 0),
            RunSpec(model=student_model(width), train=replace(p.student, seed=0), **base),
        )
        for temperature in p.temperatures:
            result.add(
                distill_key(width, temperature, 0),
                distilled(0, at_temperature(p.distill, temperature), model=student_model(width)),
            )
    for seed in range(seeds):  # 3. and 4. transfer sets without 3s / of only 7s and 8s
        held = {"holdout_fraction": p.holdout_fraction}
        result.add(omit_key(seed), distilled(seed, drop_classes=[OMITTED_CLASS], **held))
        result.add(only78_key(seed), distilled(seed, keep_classes=list(KEPT_CLASSES), **held))
    for dataset in p.ensemble_datasets:  # 5. ensembles, members from seeds 0..N-1
        members = [
            result.add(
                hard_key(dataset, p.ensemble_model, k),
                RunSpec(
                    model=p.ensemble_model,
                    train=replace(p.student, seed=k),
                    **{**base, "dataset": dataset},
                ),
            )
            for k in range(p.ensemble_size)
        ]
        result.add(
            ensemble_key(dataset, p),
            RunSpec(
                model=p.ensemble_model,
                teachers=[str(out / m) for m in members],
                train=replace(p.distill, seed=0, grad_clip=ENSEMBLE_GRAD_CLIP),
                **{**base, "dataset": dataset},
            ),
        )
    small = {"train_fraction": p.data_fraction * p.small_fraction}
    for seed in range(seeds):  # 6. soft targets as a regulariser
        hard = RunSpec(model=main, train=replace(p.small, seed=seed), **{**base, **small})
        result.add(small_key("hard", seed), hard)
        early = replace(p.small, seed=seed, val_fraction=p.small_val_fraction)
        early = replace(early, patience=p.small_patience)
        result.add(small_key("hard-early", seed), replace(hard, train=early))
        soft = replace(
            p.small, lr=p.distill.lr, loss=p.distill.loss, loss_args=dict(p.distill.loss_args)
        )
        result.add(small_key("soft", seed), distilled(seed, soft, **small))
    return result


def at_temperature(config: TrainConfig, temperature: float) -> TrainConfig:
    """``config`` (of the "hinton" loss) at another temperature."""
    return replace(config, loss_args={**config.loss_args, "temperature": temperature})


def omit_key(seed: int) -> str:
    return f"mnist/omit{OMITTED_CLASS}-{MAIN_WIDTH}x{MAIN_WIDTH}/seed{seed}"


def only78_key(seed: int) -> str:
    return f"mnist/only{''.join(map(str, KEPT_CLASSES))}-{MAIN_WIDTH}x{MAIN_WIDTH}/seed{seed}"


def ensemble_key(dataset: str, profile: Profile) -> str:
    return (
        f"{dataset}/ensemble{profile.ensemble_size}-distilled-{_tag(profile.ensemble_model)}/seed0"
    )


def small_key(kind: str, seed: int) -> str:
    return f"mnist/small-{kind}/seed{seed}"


# --------------------------------------------------------------------------- run


def differences(saved: dict, current: dict) -> list[str]:
    """:func:`~kdistill.compat.config_differences` of two run configs, paths and device aside
    (teachers compared by their place in the output folder)."""
    saved, current = dict(saved), dict(current)
    for config in (saved, current):
        config["teachers"] = [list(Path(t).parts[-3:]) for t in config.get("teachers", [])]
    return config_differences(saved, current, ignore=("data_dir", "train.device"))


def check_same_run(folder: Path, spec: RunSpec) -> None:
    """Raise unless the run in ``folder`` was made with ``spec`` (paths and device aside).

    The run may have been made by an earlier version (see :mod:`kdistill.compat`).
    """
    found = differences(json.loads((folder / "config.json").read_text()), asdict(spec))
    if found:
        raise KDistillError(
            f"{folder} holds a run with another config than this reproduction needs "
            f"({describe_differences(found)}); move it away or choose another --out"
        )


TEACHER_FILES = ("config.json", "meta.json", "history.csv", "model.safetensors", "metrics.json")


def reuse_teacher(source: Path, folder: Path, spec: RunSpec) -> None:
    """Copy the finished teacher run ``source`` into ``folder``, if it is the planned teacher.

    Refused, with nothing written, unless ``source`` is a finished run of ``spec``; a
    ``folder`` that already holds a finished run is left as it is (and checked as usual).
    """
    if not is_complete(source):
        raise KDistillError(f"--teacher-run {source} is not a finished run (no metrics.json)")
    found = differences(json.loads((source / "config.json").read_text()), asdict(spec))
    if found:
        raise KDistillError(
            f"--teacher-run {source} was trained with another config than this profile's "
            f"teacher ({describe_differences(found)}); give a teacher of this profile, or "
            "leave --teacher-run out to train one"
        )
    if is_complete(folder) or has_checkpoint(folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in TEACHER_FILES:  # metrics.json last: a half-copied folder is not "finished"
        atomic_write(folder / name, (source / name).read_bytes())


def reproduce(
    profile: str | Profile,
    out: str | Path,
    data_dir: str | None = None,
    seeds: int = 1,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
    teacher_run: str | Path | None = None,
) -> list[dict]:
    """Run (or continue) the whole reproduction into ``out`` and write its report there.

    Returns the result rows (as in ``results.json``). ``log`` gets one line per finished run
    (default: printed at once). ``teacher_run``: a finished run of the profile's teacher, copied
    into ``out`` (when it has no teacher yet) instead of training one.
    """
    log = log or functools.partial(print, flush=True)
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise KDistillError(f"unknown profile {profile!r}: choose {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    out = Path(out)
    if data_dir is not None:
        data_dir = str(Path(data_dir).resolve())
    started = time.perf_counter()
    the_plan = plan(profile, out, data_dir, seeds)
    if teacher_run is not None:
        reuse_teacher(Path(teacher_run), out / teacher_key(), the_plan.runs[teacher_key()])
    argv = list(argv if argv is not None else ["kdistill", *sys.argv[1:]])
    total = len(the_plan.runs)
    for number, (key, spec) in enumerate(the_plan.runs.items(), 1):
        folder = out / key
        run_started = time.perf_counter()
        if is_complete(folder):
            check_same_run(folder, spec)
            how = "already done"
        else:
            resume = has_checkpoint(folder)
            if resume:
                check_same_run(folder, spec)
            execute(spec, folder, resume=resume, progress=progress, argv=argv)
            how = f"{'resumed, ' if resume else ''}{time.perf_counter() - run_started:.0f} s"
        metrics = _metrics(folder)
        test = metrics["test"]
        log(
            f"[{number}/{total}] {key}: {test['errors']} test errors of {test['examples']} "
            f"({metrics['epochs_run']} epochs, {how})"
        )
    rows = results(the_plan, out)
    write_report(the_plan, out, rows, argv=argv, seconds=time.perf_counter() - started)
    log(f"report written to {out / 'REPORT.md'}")
    return rows


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# --------------------------------------------------------------------------- results


def _row(
    experiment: str,
    row: str,
    paper: float | None,
    values: Sequence[float],
    unit: str,
    epochs: str,
    better: str | None = "lower",
    gap: tuple[float, float] | None = None,
) -> dict:
    """One result row; ``gap`` = (student alone, teacher) in the row's unit, when the row is a
    distilled student, gives the share of the student-to-teacher gap that it closed."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    closed = None
    if gap is not None and gap[0] != gap[1]:
        closed = round(100 * (gap[0] - mean) / (gap[0] - gap[1]), 1)
    return {
        "experiment": experiment,
        "row": row,
        "paper": paper,
        "measured": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "seeds": len(values),
        "unit": unit,
        "epochs": epochs,
        "better": better,
        "gap_closed": closed,
    }


def _bias_shift_rows(
    experiment: str,
    studies: Sequence[dict],
    paper_shift: float,
    shift_unit: str,
    outcomes: Sequence[tuple[str, float, str, Callable[[list[int]], float], tuple | None]],
    epochs: str,
) -> list[dict]:
    """Rows for the shift chosen on test (as the paper did) and on held-out training data.

    For each choice: the shift found, then each outcome ``(name, paper figure, unit,
    per-class test errors -> value, (alone, teacher) or None)`` after that shift.
    """
    rows = []
    for where, paper in (("test", paper_shift), ("held-out", None)):
        label = "chosen on test (paper)" if where == "test" else "chosen on held-out training data"
        shifts = [st[where]["shift"] for st in studies]
        rows.append(
            _row(experiment, f"bias shift {label}", paper, shifts, shift_unit, epochs, None)
        )
        for name, paper_value, unit, value_of, gap in outcomes:
            values = [value_of(st[where]["per_class"]) for st in studies]
            row = f"{name}, shift {label}"
            rows.append(_row(experiment, row, paper_value, values, unit, epochs, gap=gap))
    return rows


def _epochs(spec: RunSpec, metrics: Sequence[dict]) -> str:
    if spec.train.patience is None:
        return str(spec.train.epochs)
    best = [m["best_epoch"] for m in metrics]
    return f"best {statistics.fmean(best):.0f} of <= {spec.train.epochs} (early stopping)"


def choose_shift(
    logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], sign: float
) -> float:
    """The bias shift (``sign`` x a value of :data:`SHIFT_GRID`) of ``classes`` with fewest errors.

    Adding ``s`` to a class's output bias adds ``s`` to its logit for every input, so the shift
    is searched on the logits. Ties go to the lower cross-entropy.
    """
    best: tuple[int, float, float] | None = None
    for value in SHIFT_GRID:
        shifted = _shifted(logits, classes, sign * value)
        errors = int((shifted.argmax(1) != labels).sum())
        loss = float(F.cross_entropy(shifted, labels))
        if best is None or (errors, loss) < best[:2]:
            best = (errors, loss, sign * value)
    return best[2]


def _shifted(logits: torch.Tensor, classes: Sequence[int], shift: float) -> torch.Tensor:
    shifted = logits.clone()
    shifted[:, list(classes)] += shift
    return shifted


def _per_class_errors(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> list[int]:
    wrong = logits.argmax(1) != labels
    return torch.bincount(labels[wrong], minlength=classes).tolist()


def bias_shift_study(spec: RunSpec, folder: Path, classes: Sequence[int], sign: float) -> dict:
    """Test errors of a run before and after the shift chosen on test and on held-out data."""
    dataset = cached_dataset(spec.dataset, spec.data_dir)
    model, _ = load_run_model(folder)
    test_logits = predict_logits(model, dataset.test.images)
    held = holdout_split(dataset.train, spec)
    held_logits = predict_logits(model, held.images)
    labels = dataset.test.labels
    study = {"before": _per_class_errors(test_logits, labels, dataset.num_classes)}
    for where, (logits, truth) in {
        "test": (test_logits, labels),
        "held-out": (held_logits, held.labels),
    }.items():
        shift = choose_shift(logits, truth, classes, sign)
        study[where] = {
            "shift": shift,
            "per_class": _per_class_errors(
                _shifted(test_logits, classes, shift), labels, dataset.num_classes
            ),
        }
    study["held_out_examples"] = len(held)
    return study


def results(the_plan: Plan, out: Path) -> list[dict]:
    """The result rows of a finished reproduction, paper figure beside measured."""
    p, seeds, runs = the_plan.profile, range(the_plan.seeds), the_plan.runs
    rows: list[dict] = []

    def errors(keys: Sequence[str]) -> tuple[list[int], str]:
        metrics = [_metrics(out / k) for k in keys]
        return [m["test"]["errors"] for m in metrics], _epochs(runs[keys[0]], metrics)

    main = student_model(MAIN_WIDTH)
    exp = "1. main table (MNIST)"
    unit = "test errors / 10,000"
    values, ep = errors([teacher_key()])
    teacher = statistics.fmean(values)
    rows.append(
        _row(
            exp, "teacher 1200-1200, dropout, max-norm, jitter", PAPER["teacher"], values, unit, ep
        )
    )
    values, ep = errors([hard_key("mnist", main, s) for s in seeds])
    alone = statistics.fmean(values)
    rows.append(_row(exp, "student 800-800 alone", PAPER["student"], values, unit, ep))
    values, ep = errors([distill_key(MAIN_WIDTH, MAIN_TEMPERATURE, s) for s in seeds])
    rows.append(
        _row(
            exp,
            "student 800-800 distilled, T=20",
            PAPER["distilled"],
            values,
            unit,
            ep,
            gap=(alone, teacher),
        )
    )

    exp = "2. width x temperature (MNIST)"
    for width in p.widths:
        values, ep = errors([hard_key("mnist", student_model(width), 0)])
        width_alone = statistics.fmean(values)
        rows.append(_row(exp, f"{width}-{width} alone", None, values, unit, ep))
        for temperature in p.temperatures:
            values, ep = errors([distill_key(width, temperature, 0)])
            row = f"{width}-{width} at T={temperature:g}"
            rows.append(_row(exp, row, None, values, unit, ep, gap=(width_alone, teacher)))

    exp = f"3. transfer set without {OMITTED_CLASS}s (MNIST)"
    studies = [
        bias_shift_study(runs[omit_key(s)], out / omit_key(s), [OMITTED_CLASS], +1.0) for s in seeds
    ]
    ep = str(p.distill.epochs)
    rows.append(
        _row(
            exp,
            "test errors",
            PAPER["omit3_errors"],
            [sum(st["before"]) for st in studies],
            unit,
            ep,
            gap=(alone, teacher),
        )
    )
    rows.append(
        _row(
            exp,
            f"errors on the test {OMITTED_CLASS}s",
            PAPER["omit3_errors_on_3"],
            [st["before"][OMITTED_CLASS] for st in studies],
            unit,
            ep,
        )
    )
    rows += _bias_shift_rows(
        exp,
        studies,
        PAPER["omit3_shift"],
        "added to the 3's bias",
        [
            ("test errors", PAPER["omit3_shifted_errors"], unit, sum, (alone, teacher)),
            (
                f"errors on {OMITTED_CLASS}s",
                PAPER["omit3_shifted_errors_on_3"],
                unit,
                lambda per_class: per_class[OMITTED_CLASS],
                None,
            ),
        ],
        ep,
    )

    exp = "4. transfer set of only 7s and 8s (MNIST)"
    studies78 = [
        bias_shift_study(runs[only78_key(s)], out / only78_key(s), list(KEPT_CLASSES), -1.0)
        for s in seeds
    ]
    pct = "% test error"
    rows.append(
        _row(
            exp,
            "test error",
            PAPER["only78_error"],
            [sum(st["before"]) / 100 for st in studies78],
            pct,
            ep,
            gap=(alone / 100, teacher / 100),
        )
    )
    rows += _bias_shift_rows(
        exp,
        studies78,
        PAPER["only78_shift"],
        "added to 7 and 8 biases",
        [
            (
                "test error",
                PAPER["only78_shifted_error"],
                pct,
                lambda per_class: sum(per_class) / 100,
                (alone / 100, teacher / 100),
            )
        ],
        ep,
    )

    for dataset in p.ensemble_datasets:
        exp = f"5. ensemble of {p.ensemble_size} into one model ({dataset})"
        keys = [hard_key(dataset, p.ensemble_model, k) for k in range(p.ensemble_size)]
        singles, ep = errors(keys)
        ensemble = _ensemble_errors(out, keys, dataset, the_plan.data_dir)
        distilled, dep = errors([ensemble_key(dataset, p)])
        arch = p.ensemble_model
        rows.append(_row(exp, f"single {arch} (mean over members)", None, singles, unit, ep))
        rows.append(_row(exp, "ensemble (mean of probabilities)", None, [ensemble], unit, ep))
        row = f"one {arch} distilled from the ensemble"
        gap = (statistics.fmean(singles), ensemble)
        rows.append(_row(exp, row, None, distilled, unit, dep, gap=gap))
        gain = statistics.fmean(singles) - ensemble
        kept = 100 * (statistics.fmean(singles) - distilled[0]) / gain if gain > 0 else math.nan
        rows.append(
            _row(
                exp,
                "share of the ensemble's gain kept (paper: speech, Table 1)",
                PAPER["ensemble_gain_kept"],
                [kept],
                "%",
                dep,
                "higher",
            )
        )

    exp = f"6. soft targets as a regulariser ({p.small_fraction:.0%} of MNIST)"
    hard, hep = errors([small_key("hard", s) for s in seeds])
    early, eep = errors([small_key("hard-early", s) for s in seeds])
    soft, sep = errors([small_key("soft", s) for s in seeds])
    full, fep = errors([hard_key("mnist", main, s) for s in seeds])
    rows.append(_row(exp, "hard labels", None, hard, unit, hep))
    rows.append(_row(exp, "hard labels, early stopping", None, early, unit, eep))
    row = "soft targets of the full-data teacher, T=20"
    gap = (statistics.fmean(early), statistics.fmean(full))
    rows.append(_row(exp, row, None, soft, unit, sep, gap=gap))
    rows.append(_row(exp, "hard labels on all the data (the student alone)", None, full, unit, fep))
    closed = [
        100 * (e - s) / (e - f) if e > f else math.nan
        for e, s, f in zip(early, soft, full, strict=True)
    ]
    rows.append(
        _row(
            exp,
            "share of the gap to all the data closed by soft targets (paper: speech, Table 2)",
            PAPER["small_gap_closed"],
            closed,
            "%",
            sep,
            "higher",
        )
    )
    return rows


def _ensemble_errors(out: Path, keys: Sequence[str], dataset: str, data_dir: str | None) -> int:
    from kdistill.train import evaluate

    members = [load_run_model(out / k)[0] for k in keys]
    return evaluate(members, cached_dataset(dataset, data_dir).test)["errors"]


def verdict(row: dict) -> str:
    """Whether a measured figure matches (or beats) the paper's, said plainly."""
    if row["paper"] is None or row["better"] is None or math.isnan(row["measured"]):
        return ""
    worse = (
        row["measured"] > row["paper"]
        if row["better"] == "lower"
        else row["measured"] < row["paper"]
    )
    return "WORSE than the paper" if worse else "matches or beats the paper"


# --------------------------------------------------------------------------- report


def write_report(
    the_plan: Plan, out: Path, rows: list[dict], *, argv: Sequence[str], seconds: float
) -> None:
    """Write REPORT.md, results.json, meta.json and the PNGs into ``out``."""
    p = the_plan.profile
    records = [
        {k: None if _is_nan(v) else v for k, v in row.items() if k != "better"} for row in rows
    ]
    atomic_write_json(out / "results.json", records)
    train_seconds = sum(_metrics(out / k)["train_seconds"] for k in the_plan.runs)
    # A reproduction resumed across sessions has runs from several commits: list them all.
    run_commits = Counter(
        json.loads((out / k / "meta.json").read_text())["git_commit"] for k in the_plan.runs
    )
    meta = {
        "command": " ".join(argv),
        "profile": p.name,
        "seeds": the_plan.seeds,
        "runs": len(the_plan.runs),
        "train_seconds_all_runs": round(train_seconds, 1),
        "run_commits": dict(run_commits),
        "this_invocation_seconds": round(seconds, 1),
        "environment": environment(0, list(argv)),
    }
    atomic_write_json(out / "meta.json", meta)
    plots = _plots(the_plan, out)
    env = meta["environment"]

    lines = [
        "# Hinton, Vinyals & Dean (2015): paper vs measured",
        "",
        f"- command: `{meta['command']}`",
        f"- profile: `{p.name}`" + (f" ({p.note})" if p.note else ""),
        f"- seeds: {the_plan.seeds} for the cheap rows (the teacher, the width x T grid and "
        "the ensembles use one)",
        f"- report written at commit `{env['git_commit']}`, torch {env['torch']}, "
        f"{env['cpu_count']} CPUs, cuda: {env['cuda']}",
        "- runs made at commits: "
        + ", ".join(f"`{commit}` ({n})" for commit, n in run_commits.most_common()),
        f"- training time, all {len(the_plan.runs)} runs: {train_seconds / 60:.1f} min; "
        f"this invocation: {seconds / 60:.1f} min",
        "- measured: mean over seeds (+- sample std); the paper's figures for experiments 5 and "
        "6 are ratios from its speech experiments (section 4), compared as ratios.",
        "",
    ]
    worse = [row for row in rows if verdict(row).startswith("WORSE")]
    for experiment in dict.fromkeys(row["experiment"] for row in rows):
        lines += [f"## {experiment}", ""]
        table = [
            {
                "row": row["row"],
                "paper": row["paper"],
                "measured": row["measured"],
                "+- std": row["std"],
                "seeds": row["seeds"],
                "epochs": row["epochs"],
                "unit": row["unit"],
                "gap closed": "" if row["gap_closed"] is None else f"{row['gap_closed']:g}%",
                "verdict": verdict(row),
            }
            for row in rows
            if row["experiment"] == experiment
        ]
        lines += [format_table(table), ""]
    lines += ["## Worse than the paper", ""]
    lines += [
        f"- {r['experiment']}: {r['row']}: {r['measured']:g} vs {r['paper']:g}" for r in worse
    ]
    lines += ["- none"] if not worse else []
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    atomic_write_text(out / "REPORT.md", "\n".join(lines))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _plots(the_plan: Plan, out: Path) -> list[str]:
    p = the_plan.profile
    series = {
        f"{w}-{w}": (
            list(p.temperatures),
            [_metrics(out / distill_key(w, t, 0))["test"]["errors"] for t in p.temperatures],
        )
        for w in p.widths
    }
    plot_lines(
        series,
        out / "width_temperature.png",
        xlabel="temperature T",
        ylabel="test errors / 10,000",
        title="Distilled students: width x temperature",
        logx=True,
    )
    main = student_model(MAIN_WIDTH)
    histories = {
        "teacher 1200-1200": read_history(out / teacher_key() / "history.csv"),
        "student 800-800 alone": read_history(out / hard_key("mnist", main, 0) / "history.csv"),
        "student 800-800 distilled, T=20": read_history(
            out / distill_key(MAIN_WIDTH, MAIN_TEMPERATURE, 0) / "history.csv"
        ),
    }
    plot_curves(histories, out / "main_curves.png")

    teacher, _ = load_run_model(out / teacher_key())
    test = cached_dataset("mnist", the_plan.data_dir).test
    logits = predict_logits(teacher, test.images[:2000])
    # A confidently right digit (top probability 0.9-0.99 at T = 1) with the most probability on
    # its runner-up: nearly one-hot at T = 1, and the similarity structure shows as T rises.
    top2 = logits.softmax(1).topk(2, dim=1).values
    eligible = (logits.argmax(1) == test.labels[:2000]) & (top2[:, 0] > 0.9) & (top2[:, 0] < 0.99)
    index = int(torch.where(eligible, top2[:, 1], torch.tensor(-1.0)).argmax())
    plot_soft_targets(
        logits[index : index + 1],
        SOFT_TARGET_TEMPERATURES,
        out / "soft_targets.png",
        images=test.images[index : index + 1],
    )

    groups = {}
    for key, classes, sign, name in (
        (omit_key(0), [OMITTED_CLASS], 1.0, f"no {OMITTED_CLASS}s"),
        (only78_key(0), list(KEPT_CLASSES), -1.0, "only 7s and 8s"),
    ):
        study = bias_shift_study(the_plan.runs[key], out / key, classes, sign)
        groups[name] = {
            "before the shift": study["before"],
            f"shift {study['test']['shift']:+g} (chosen on test)": study["test"]["per_class"],
            f"shift {study['held-out']['shift']:+g} (chosen on held-out)": study["held-out"][
                "per_class"
            ],
        }
    plot_grouped_bars(
        groups,
        out / "bias_shift.png",
        xlabel="test class",
        ylabel="test errors",
        title="Per-class test errors and the bias shift",
    )
    return ["width_temperature.png", "main_curves.png", "soft_targets.png", "bias_shift.png"]
