"""What a whole reproduction costs on this machine, measured without running it whole.

Usage::

    python benchmarks/reproduce_cost.py --profile paper --seeds 3 --jobs 2   # ~8 min, 2 idle cores
    python benchmarks/reproduce_cost.py --from-records FOLDER [FOLDER ...]   # seconds, no training

Runs every run of the profile's plan cut to ``--epochs`` epochs (3), ``--jobs`` at a time, as
``kdistill reproduce --jobs`` does, into ``--out`` (a scratch folder). Then each run's cost is
its full epochs x the median of its measured epochs + its measured time outside them (its
``train_seconds``, which start at its first epoch, minus its epochs: checkpoints and the like),
and the whole reproduction's wall time is the schedule of those costs as ``--jobs`` workers run
it (plan order, a run waits for its teachers), plus what the cut reproduction spent outside its
runs' ``train_seconds`` (each run's data, teacher logits, evaluation, cost table and files; the
report; the plots).

A run that stops early (patience) is counted at its full epochs: the estimate is an upper
bound there. Prints the table and writes it with the machine's load to ``--json``.

``--from-records`` trains nothing: each run's cost is the ``train_seconds`` that its finished
record says (the first of the folders that holds it), scheduled the same way; what a
reproduction spends outside its runs is not counted.
"""

from __future__ import annotations

# isort: off
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's kdistill
import kdistill  # noqa: E402, F401  (before torch: it sets OMP_WAIT_POLICY)

# isort: on
import argparse
import heapq
import json
import os
import statistics
import time
from dataclasses import replace

import torch

from kdistill.experiments import hinton2015 as h  # noqa: E402
from kdistill.experiments.jobs import ready_runs  # noqa: E402
from kdistill.runs import git_commit, read_history  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cut(profile: h.Profile, epochs: int) -> h.Profile:
    """``profile`` with every run trained for ``epochs`` epochs (the same plan, the same keys:
    ensemble members keep their own epochs only where the profile gives them)."""
    trainings = {
        name: getattr(profile, name) for name in ("teacher", "student", "distill", "small")
    }
    cut_epochs = {name: replace(config, epochs=epochs) for name, config in trainings.items()}
    ensemble_epochs = epochs if profile.ensemble_epochs is not None else None
    regularised = tuple(
        replace(ensemble, epochs=epochs) if ensemble.epochs is not None else ensemble
        for ensemble in profile.regularised_ensembles
    )
    return replace(
        profile, **cut_epochs, ensemble_epochs=ensemble_epochs, regularised_ensembles=regularised
    )


def makespan(order: list[str], teachers: dict[str, set[str]], seconds: dict, jobs: int) -> float:
    """Wall time of ``jobs`` workers making the runs of ``order`` as kdistill's pool does: in
    plan order, each run once its teachers are finished."""
    pending, running, now = list(order), [], 0.0
    while pending or running:
        for key in ready_runs(pending, [key for _, key in running], teachers, jobs):
            pending.remove(key)
            heapq.heappush(running, (now + seconds[key], key))
        now, _ = heapq.heappop(running)
    return now


def teachers_by_key(the_plan, out: Path) -> dict[str, set[str]]:
    """Each run's teachers, by their keys in the plan (folders relative to ``out``)."""
    return {
        key: {str(Path(t).resolve().relative_to(out)) for t in spec.teachers}
        for key, spec in the_plan.runs.items()
    }


def estimate(profile: h.Profile, out: Path, seeds: int, jobs: int, epochs: int, data_dir) -> dict:
    """Run the cut plan into ``out`` and scale each run to its full epochs."""
    short_profile = cut(profile, epochs)
    started = time.perf_counter()
    h.reproduce(short_profile, out, data_dir, seeds=seeds, jobs=jobs, progress=False, log=print)
    wall = time.perf_counter() - started
    short_plan, full_plan = (
        h.plan(short_profile, out, seeds=seeds),
        h.plan(profile, out, seeds=seeds),
    )
    order = list(short_plan.runs)
    teachers = teachers_by_key(short_plan, out)
    short, full = {}, {}
    for key, full_spec in zip(order, full_plan.runs.values(), strict=True):
        metrics = json.loads((out / key / "metrics.json").read_text())
        epoch_seconds = [row["seconds"] for row in read_history(out / key / "history.csv")]
        short[key] = metrics["train_seconds"]
        outside_epochs = metrics["train_seconds"] - sum(epoch_seconds)
        full[key] = full_spec.train.epochs * statistics.median(epoch_seconds) + outside_epochs
    outside_runs = wall - makespan(order, teachers, short, jobs)
    return {
        "cut_reproduction_wall_s": round(wall, 1),
        "outside_runs_s": round(outside_runs, 1),
        "runs": len(order),
        "teacher_min": round(full[h.teacher_key()] / 60, 1),
        "training_summed_min": round(sum(full.values()) / 60, 1),
        "wall_min": round((makespan(order, teachers, full, jobs) + outside_runs) / 60, 1),
        "per_run_s": {key: round(value, 1) for key, value in full.items()},
    }


def from_records(profile: h.Profile, folders: list[Path], seeds: int, jobs: int) -> dict:
    """The schedule of the plan's runs at the times their finished records took."""
    the_plan = h.plan(profile, folders[0], seeds=seeds)
    order, seconds, sources = list(the_plan.runs), {}, {}
    for key in order:
        found = [folder for folder in folders if (folder / key / "metrics.json").exists()]
        if not found:
            raise SystemExit(f"no finished record of {key} in {', '.join(map(str, folders))}")
        seconds[key] = json.loads((found[0] / key / "metrics.json").read_text())["train_seconds"]
        sources[str(found[0])] = sources.get(str(found[0]), 0) + 1
    teachers = teachers_by_key(the_plan, folders[0].resolve())
    return {
        "runs": len(order),
        "runs_by_folder": sources,
        "teacher_min": round(seconds[h.teacher_key()] / 60, 1),
        "training_summed_min": round(sum(seconds.values()) / 60, 1),
        "wall_min": round(makespan(order, teachers, seconds, jobs) / 60, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the estimate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", choices=sorted(h.PROFILES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each cut run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce-cost")
    parser.add_argument("--data-dir", default=os.environ.get("KDISTILL_DATA"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--from-records", type=Path, nargs="+", help="run folders of finished runs: no training"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    profile = h.PROFILES[args.profile]
    if args.from_records:
        result = from_records(profile, args.from_records, args.seeds, args.jobs)
    else:
        out = args.out.resolve()
        result = estimate(profile, out, args.seeds, args.jobs, args.epochs, args.data_dir)
    result = {
        "profile": args.profile,
        "seeds": args.seeds,
        "jobs": args.jobs,
        "git_commit": git_commit(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **result,
    }
    result["load_average_before_after"] = [load[0], os.getloadavg()[0]]
    for name in ("runs", "teacher_min", "training_summed_min", "outside_runs_s", "wall_min"):
        if name in result:
            print(f"{name:>22}: {result[name]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
