"""What every paper reproduction shares: its plan of runs, the loop that runs them, result rows
and the report.

A reproduction (:class:`Reproduction`) is a plan of runs, built from a profile (how much of the
protocol to run): an ordered mapping of folder names to :class:`~kdistill.runs.RunSpec`, teachers
before their students (:class:`Plan`). :func:`reproduce` runs the plan into an output folder (a
finished run is checked and kept, an interrupted one resumes from its checkpoint), asks the
paper for its result rows (:func:`result_row`: paper figure beside measured, a verdict, the
share of a gap closed) and its plots, and writes ``REPORT.md``, ``results.json`` and
``meta.json`` (command, versions, commits), each atomically.

Whether a folder holds the planned run is decided by :func:`kdistill.compat.config_differences`
(:func:`differences`), with the teachers compared by their place in the output folder, so a
reproduction's runs stay recognised after the folder moved (the committed records under
``docs/results`` were made elsewhere).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdistill.checkpoint import atomic_write, atomic_write_json, atomic_write_text, has_checkpoint
from kdistill.compat import config_differences, describe_differences
from kdistill.errors import KDistillError
from kdistill.experiments.jobs import finished_line, run_in_parallel
from kdistill.reports import format_table
from kdistill.runs import RunSpec, environment, is_complete, run_or_resume

# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The runs of one reproduction, by folder name (relative to the output folder), in order."""

    profile: Any  # the paper's profile (a dataclass with at least ``name`` and ``note``)
    seeds: int
    data_dir: str | None = None
    runs: dict[str, RunSpec] = field(default_factory=dict)
    experiments: tuple[str, ...] = ()  # the experiments planned, when a paper names them
    # What the reproduction chose from finished runs before planning the rest (see
    # Reproduction.choose), e.g. each loss's setting chosen on held-out data; {} for none.
    choices: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, spec: RunSpec) -> str:
        """Add a run (once: the same key must mean the same spec) and return its key."""
        if key in self.runs and differences(asdict(self.runs[key]), asdict(spec)):
            raise AssertionError(f"two different runs named {key}")
        self.runs.setdefault(key, spec)
        return key


@dataclass(frozen=True)
class Reproduction:
    """One paper's reproduction: its profiles, its plan and its analyses.

    ``plan(profile, out, data_dir, seeds)`` declares every run; ``results(plan, out)`` turns the
    finished runs into result rows (see :func:`result_row`) and ``plots(plan, out)`` writes the
    PNGs into ``out`` and returns their names. ``teacher_key`` is the run that ``--teacher-run``
    may replace. ``seeds_note`` follows the number of seeds in the report (which runs repeat),
    ``figures_note`` says how the measured figures compare with the paper's. ``experiments``
    names the paper's experiments (name -> one line), when it can run some of them alone: then
    ``plan`` takes ``experiments=`` (the names chosen) and records them in ``Plan.experiments``.

    A plan in two stages: with ``choose``, the plan first declares the runs that a choice rests
    on (``plan(profile, out, data_dir, seeds)``, e.g. a grid scored on held-out data); once they
    are finished, ``choose(plan, out)`` returns the choices (data: what was chosen, and why) and
    ``plan(profile, out, data_dir, seeds, choices=choices)`` declares every run, the first
    stage's included. ``cells(row)`` makes a result row a line of the report's tables (default
    :func:`report_cells`), and ``summary(rows)`` returns Markdown lines written after them.
    """

    name: str
    title: str
    profiles: Mapping[str, Any]
    plan: Callable[..., Plan]
    results: Callable[[Plan, Path], list[dict]]
    plots: Callable[[Plan, Path], list[str]]
    teacher_key: str | None = None
    seeds_note: str = ""
    figures_note: str = ""
    choose: Callable[[Plan, Path], dict] | None = None
    cells: Callable[[dict], dict] | None = None
    summary: Callable[[list[dict]], list[str]] | None = None
    heading: str = "paper vs measured"  # follows the title in REPORT.md
    experiments: Mapping[str, str] = field(default_factory=dict)

    def check_experiments(self, names: Sequence[str]) -> None:
        """Raise a one-line error unless every name in ``names`` is one of the experiments."""
        if not names:
            return
        if not self.experiments:
            raise KDistillError(f"{self.name} runs all its experiments together: drop --experiment")
        unknown = [name for name in names if name not in self.experiments]
        if unknown:
            raise KDistillError(
                f"{self.name} has no experiment {', '.join(map(repr, unknown))}: choose from "
                f"{', '.join(self.experiments)}"
            )

    def profile(self, name: str) -> Any:
        """The profile called ``name``, or a one-line error naming the others."""
        if name not in self.profiles:
            raise KDistillError(f"unknown profile {name!r}: choose {', '.join(self.profiles)}")
        return self.profiles[name]


# --------------------------------------------------------------------------- same run?


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
    found = differences(read_json(folder / "config.json"), asdict(spec))
    if found:
        raise KDistillError(
            f"{folder} holds a run with another config than this reproduction needs "
            f"({describe_differences(found)}); move it away or choose another --out"
        )


# The files of a finished run, metrics.json last: its presence means the run is finished.
TEACHER_FILES = ("config.json", "meta.json", "history.csv", "model.safetensors", "metrics.json")


def reuse_teacher(source: Path, folder: Path, spec: RunSpec) -> None:
    """Copy the finished teacher run ``source`` into ``folder``, if it is the planned teacher.

    Refused, with nothing written, unless ``source`` is a finished run of ``spec``; a
    ``folder`` that already holds a finished run is left as it is (and checked as usual).
    """
    if not is_complete(source):
        raise KDistillError(f"--teacher-run {source} is not a finished run (no metrics.json)")
    found = differences(read_json(source / "config.json"), asdict(spec))
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


# --------------------------------------------------------------------------- running


def reproduce(
    reproduction: Reproduction,
    profile: str | Any,
    out: str | Path,
    data_dir: str | None = None,
    seeds: int = 1,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
    teacher_run: str | Path | None = None,
    experiments: Sequence[str] = (),
    jobs: int = 1,
) -> list[dict]:
    """Run (or continue) the reproduction into ``out`` and write its report there.

    Returns the result rows (as in ``results.json``). ``log`` gets one line per finished run
    (default: printed at once). ``teacher_run``: a finished run of the profile's teacher, copied
    into ``out`` (when it has no teacher yet) instead of training one. ``experiments``: run and
    report only these of the paper's experiments (and those they are compared with); all if
    empty. ``jobs``: runs made at a time, each in a worker process (:mod:`.jobs`).
    """
    log = log or functools.partial(print, flush=True)
    reproduction.check_experiments(experiments)
    if not (isinstance(jobs, int) and jobs >= 1):
        raise KDistillError(f"--jobs must be >= 1, got {jobs}")
    if isinstance(profile, str):
        profile = reproduction.profile(profile)
    out = Path(out)
    if data_dir is not None:
        data_dir = str(Path(data_dir).resolve())
    started = time.perf_counter()
    chosen = {"experiments": tuple(experiments)} if experiments else {}
    the_plan = reproduction.plan(profile, out, data_dir, seeds, **chosen)
    if teacher_run is not None:
        reuse_teacher_run(reproduction, the_plan, out, Path(teacher_run))
    argv = list(argv if argv is not None else ["kdistill", *sys.argv[1:]])
    run_plan(the_plan, out, progress=progress, log=log, argv=argv, jobs=jobs)
    if reproduction.choose is not None:  # the second stage: runs that rest on a choice
        first = set(the_plan.runs)
        choices = reproduction.choose(the_plan, out)
        the_plan = reproduction.plan(profile, out, data_dir, seeds, choices=choices, **chosen)
        run_plan(the_plan, out, progress=progress, log=log, argv=argv, skip=first, jobs=jobs)
    rows = reproduction.results(the_plan, out)
    seconds = time.perf_counter() - started
    write_report(reproduction, the_plan, out, rows, argv=argv, seconds=seconds)
    log(f"report written to {out / 'REPORT.md'}")
    return rows


def reuse_teacher_run(reproduction: Reproduction, the_plan: Plan, out: Path, source: Path) -> None:
    """``--teacher-run``: copy ``source`` in as the plan's teacher (see :func:`reuse_teacher`)."""
    key = reproduction.teacher_key
    if key is None:
        raise KDistillError(f"{reproduction.name} trains no teacher that --teacher-run could be")
    reuse_teacher(source, out / key, the_plan.runs[key])


def run_plan(
    the_plan: Plan,
    out: Path,
    *,
    progress: bool,
    log: Callable[[str], None],
    argv: list[str],
    skip: set[str] | frozenset[str] = frozenset(),
    jobs: int = 1,
) -> None:
    """Make every run of the plan (but those of ``skip``: already made), logging one line per
    run: in plan order, or ``jobs`` at a time in worker processes (:mod:`.jobs`)."""
    total = len(the_plan.runs)
    todo = [
        (number, key, spec)
        for number, (key, spec) in enumerate(the_plan.runs.items(), 1)
        if key not in skip
    ]
    if jobs > 1:
        run_in_parallel(todo, out, jobs, total=total, log=log, argv=argv, same_run=check_same_run)
        return
    for number, key, spec in todo:
        started = time.perf_counter()
        metrics, state = run_or_resume(
            spec, out / key, same_run=check_same_run, progress=progress, argv=argv
        )
        log(finished_line(number, total, key, metrics, state, time.perf_counter() - started))


# --------------------------------------------------------------------------- result rows


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_metrics(folder: Path) -> dict:
    """A finished run's metrics.json."""
    return read_json(folder / "metrics.json")


@dataclass(frozen=True)
class Measured:
    """A figure measured over one or more runs: one value per run, and its epochs as reported."""

    values: list[float]
    epochs: str

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


@dataclass(frozen=True)
class FinishedRuns:
    """The finished runs of a plan in ``out``, read for the result rows."""

    plan: Plan
    out: Path

    @property
    def seeds(self) -> range:
        return range(self.plan.seeds)

    def metrics(self, key: str) -> dict:
        return read_metrics(self.out / key)

    def test_errors(self, keys: Sequence[str]) -> Measured:
        """The test errors of the runs ``keys`` (runs of the same settings but their seeds)."""
        metrics = [self.metrics(key) for key in keys]
        errors = [m["test"]["errors"] for m in metrics]
        return Measured(errors, epochs_label(self.plan.runs[keys[0]], metrics))


def epochs_label(spec: RunSpec, metrics: Sequence[dict]) -> str:
    """The epochs of a row: the planned number, or the mean best epoch under early stopping."""
    if spec.train.patience is None:
        return str(spec.train.epochs)
    best = [m["best_epoch"] for m in metrics]
    return f"best {statistics.fmean(best):.0f} of <= {spec.train.epochs} (early stopping)"


def result_row(
    experiment: str,
    row: str,
    paper: float | None,
    values: Sequence[float],
    unit: str,
    epochs: str,
    better: str | None = "lower",
    gap: tuple[float, float] | None = None,
) -> dict:
    """One result row: the paper's figure (or None) beside the mean of ``values`` (over seeds).

    ``better`` says which way is better ("lower", "higher", or None where no verdict applies).
    ``gap`` = (student alone, teacher) in the row's unit, when the row is a distilled student,
    gives the share of the student-to-teacher gap that it closed.
    """
    values = [float(v) for v in values]
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
        "gap_closed": gap_closed(statistics.fmean(values), gap),
    }


def gap_closed(measured: float, gap: tuple[float, float] | None) -> float | None:
    """The share (%) of the gap from ``gap[0]`` (student alone) to ``gap[1]`` (teacher) that
    ``measured`` closed, in errors (lower is better); None without a gap, and None where the
    teacher is no better than the student alone: there is then no gap to close, and a ratio
    with a negative denominator would turn a better student into a negative share."""
    if gap is None or gap[1] >= gap[0]:
        return None
    start, goal = gap
    return round(100 * (start - measured) / (start - goal), 1)


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


# --------------------------------------------------------------------------- the report


def write_report(
    reproduction: Reproduction,
    the_plan: Plan,
    out: Path,
    rows: list[dict],
    *,
    argv: Sequence[str],
    seconds: float,
) -> None:
    """Write results.json, meta.json, the plots and REPORT.md into ``out``."""
    atomic_write_json(out / "results.json", [result_record(row) for row in rows])
    train_seconds = sum(read_metrics(out / key)["train_seconds"] for key in the_plan.runs)
    meta = run_meta(the_plan, out, argv, train_seconds=train_seconds, seconds=seconds)
    atomic_write_json(out / "meta.json", meta)
    plots = reproduction.plots(the_plan, out)
    lines = report_header(reproduction, the_plan, meta, train_seconds, seconds)
    lines += experiment_tables(rows, reproduction.cells or report_cells)
    if reproduction.summary is not None:
        lines += reproduction.summary(rows)
    if any(row["paper"] is not None for row in rows):
        lines += worse_than_the_paper(rows)
    lines += teachers_weights_table(meta["teachers_weights_sha256"])
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    atomic_write_text(out / "REPORT.md", "\n".join(lines))


def result_record(row: dict) -> dict:
    """A result row as results.json holds it: no verdict direction, NaN as null."""
    return {k: None if _is_nan(v) else v for k, v in row.items() if k != "better"}


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def run_meta(
    the_plan: Plan, out: Path, argv: Sequence[str], *, train_seconds: float, seconds: float
) -> dict:
    """meta.json: the command, profile, seeds, training time, the runs' commits, versions."""
    # A reproduction resumed across sessions has runs from several commits: list them all.
    run_commits = Counter(read_json(out / key / "meta.json")["git_commit"] for key in the_plan.runs)
    return {
        "command": " ".join(argv),
        "profile": the_plan.profile.name,
        "seeds": the_plan.seeds,
        "runs": len(the_plan.runs),
        "train_seconds_all_runs": round(train_seconds, 1),
        "run_commits": dict(run_commits),
        "teachers_weights_sha256": teachers_weights(the_plan, out),
        "this_invocation_seconds": round(seconds, 1),
        **({"choices": the_plan.choices} if the_plan.choices else {}),
        "environment": environment(0, list(argv)),
    }


def teachers_weights(the_plan: Plan, out: Path) -> dict[str, str | None]:
    """The sha256 of each teacher run's ``model.safetensors`` (the runs others distil from), so
    a re-distillation can check it has the same weights; None where the file is not there."""
    taught_by = {Path(t).resolve() for spec in the_plan.runs.values() for t in spec.teachers}
    hashes: dict[str, str | None] = {}
    for key in the_plan.runs:
        weights = out / key / "model.safetensors"
        if (out / key).resolve() in taught_by:
            hashes[key] = (
                hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
            )
    return hashes


def teachers_weights_table(hashes: Mapping[str, str | None]) -> list[str]:
    """REPORT.md's section of the teachers' weights (none when no run has a teacher)."""
    if not hashes:
        return []
    rows = [
        {"teacher run": f"`{key}`", "model.safetensors sha256": f"`{sha}`" if sha else "not kept"}
        for key, sha in hashes.items()
    ]
    return ["", "## Teachers' weights", "", format_table(rows)]


def report_header(
    reproduction: Reproduction, the_plan: Plan, meta: dict, train_seconds: float, seconds: float
) -> list[str]:
    """REPORT.md's title and its list of what was run, where, when and at which commits."""
    profile, env = the_plan.profile, meta["environment"]
    run_commits = Counter(meta["run_commits"])
    return [
        f"# {reproduction.title}: {reproduction.heading}",
        "",
        f"- command: `{meta['command']}`",
        f"- profile: `{profile.name}`" + (f" ({profile.note})" if profile.note else ""),
        f"- seeds: {the_plan.seeds} {reproduction.seeds_note}".rstrip(),
        *experiments_line(reproduction, the_plan),
        f"- report written at commit `{env['git_commit']}`, torch {env['torch']}, "
        f"{env['cpu_count']} CPUs, cuda: {env['cuda']}",
        "- runs made at commits: "
        + ", ".join(f"`{commit}` ({n})" for commit, n in run_commits.most_common()),
        f"- training time, all {meta['runs']} runs: {train_seconds / 60:.1f} min; "
        f"this invocation: {seconds / 60:.1f} min",
        f"- measured: mean over seeds (+- sample std){reproduction.figures_note}",
        "",
    ]


def experiments_line(reproduction: Reproduction, the_plan: Plan) -> list[str]:
    """The header line naming the experiments run, when they are not all of the paper's."""
    if not the_plan.experiments or set(the_plan.experiments) >= set(reproduction.experiments):
        return []
    chosen, every = ", ".join(the_plan.experiments), len(reproduction.experiments)
    return [f"- experiments: {chosen} (of the paper's {every})"]


def experiment_tables(rows: list[dict], cells: Callable[[dict], dict] | None = None) -> list[str]:
    """One Markdown table per experiment, in the order of the rows (a line per row: ``cells``,
    by default :func:`report_cells`)."""
    cells = cells or report_cells
    lines = []
    for experiment in dict.fromkeys(row["experiment"] for row in rows):
        table = [cells(row) for row in rows if row["experiment"] == experiment]
        lines += [f"## {experiment}", "", format_table(table), ""]
    return lines


def report_cells(row: dict) -> dict:
    """A result row as a line of its experiment's table in REPORT.md."""
    return {
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


def worse_than_the_paper(rows: list[dict]) -> list[str]:
    """The section listing every row worse than the paper's figure (or "none")."""
    worse = [row for row in rows if verdict(row).startswith("WORSE")]
    lines = ["## Worse than the paper", ""]
    lines += [
        f"- {r['experiment']}: {r['row']}: {r['measured']:g} vs {r['paper']:g}" for r in worse
    ]
    return lines + (["- none"] if not worse else [])
