"""`kdistill reproduce hinton2015`: the plan as data, the bias-shift search, and the quick profile
end to end on real MNIST (the report's figures are those of the run records, and the directions
of the paper's main effects hold)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from kdistill.cli import main
from kdistill.errors import KDistillError
from kdistill.experiments import common
from kdistill.experiments import hinton2015 as h
from kdistill.models import build_model, shift_output_bias_
from kdistill.runs import RunSpec, holdout_split, transfer_split
from kdistill.train import predict_logits
from tests.conftest import make_split


def test_plan_declares_every_experiment_once_with_teachers_first(tmp_path: Path) -> None:
    the_plan = h.plan(h.PROFILES["paper"], tmp_path, seeds=3)
    keys = list(the_plan.runs)
    assert keys[0] == h.teacher_key()
    teacher_folder = str((tmp_path / h.teacher_key()).resolve())
    for key, spec in the_plan.runs.items():
        for teacher in spec.teachers:  # every teacher is a run planned before its student
            assert keys.index(str(Path(teacher).relative_to(tmp_path.resolve()))) < keys.index(key)
    main_distilled = the_plan.runs[h.distill_key(800, 20, 2)]
    assert main_distilled.teachers == [teacher_folder]
    assert main_distilled.train.loss_args["temperature"] == 20 and main_distilled.train.jitter == 0
    assert main_distilled.model == "mlp:800x800"
    # 3 widths x 7 temperatures; the 800 / T=20 cell is the main table's distilled run
    assert sum(k.startswith("mnist/distill-") and k.endswith("seed0") for k in keys) == 21
    # the ensembles: 10 members from seeds 0..9, each planned once, distilled into their size
    # from 3 seeds at T = 20 (the main one) and 5
    for dataset in ("mnist", "fashion-mnist"):
        for seed, temperature in itertools.product(range(3), (None, 5.0)):
            key = h.ensemble_key(dataset, the_plan.profile, seed, temperature)
            distilled = the_plan.runs[key]
            members = [str(Path(m).relative_to(tmp_path.resolve())) for m in distilled.teachers]
            assert members == [h.hard_key(dataset, "mlp:300x300", k) for k in range(10)]
            assert distilled.model == "mlp:300x300" and distilled.dataset == dataset
            assert distilled.train.seed == seed and distilled.train.jitter == 0
            assert distilled.train.loss_args == {"temperature": temperature or 20, "alpha": 0.9}
            assert key.endswith(
                f"300x300/seed{seed}" if temperature is None else f"-T{temperature:g}/seed{seed}"
            )
    assert h.ensemble_key("mnist", the_plan.profile, 3) not in the_plan.runs
    # and again with members that do not memorise, in runs of their own: members and
    # distilled models jittered by 2 px on MNIST, by 1 px for 120 epochs on Fashion-MNIST
    unjittered, *regularised = h.ensemble_variants(the_plan.profile)
    assert unjittered.ensemble_jitter == 0 and unjittered.ensemble_epochs is None
    for variant, dataset, jitter, epochs in zip(
        regularised, ("mnist", "fashion-mnist"), (2, 1), (60, 120), strict=True
    ):
        assert variant.ensemble_datasets == (dataset,)
        assert variant.ensemble_temperatures == (5.0,)  # only: not the main T = 20
        tag = f"jitter{jitter}" + ("-120ep" if epochs == 120 else "")
        key = h.ensemble_key(dataset, variant, 2, 5.0)
        assert key == f"{dataset}/ensemble10-distilled-300x300-{tag}-T5/seed2"
        members = [
            str(Path(m).relative_to(tmp_path.resolve())) for m in the_plan.runs[key].teachers
        ]
        assert members == [f"{dataset}/hard-300x300-{tag}/seed{k}" for k in range(10)]
        runs = [the_plan.runs[k] for k in [*members, key]]
        assert {(run.dataset, run.train.jitter, run.train.epochs) for run in runs} == {
            (dataset, jitter, epochs)
        }
    assert len([key for key in keys if "/ensemble10-" in key]) == 2 * 2 * 3 + 2 * 3
    omit = the_plan.runs[h.omit_key(1)]
    assert omit.drop_classes == [3] and omit.holdout_fraction > 0 and omit.train.seed == 1


def test_ensembles_train_for_their_own_epochs_where_a_profile_says(tmp_path: Path) -> None:
    """quick: members and distilled models 40 epochs (at 12 they fell behind), the rest 12."""
    the_plan = h.plan(h.PROFILES["quick"], tmp_path)
    ensemble = [key for key in the_plan.runs if "-100x100-40ep/" in key]
    assert len(ensemble) == 8  # 3 members and one distilled model on each dataset
    assert {the_plan.runs[key].train.epochs for key in ensemble} == {40}
    assert the_plan.runs[h.hard_key("mnist", "mlp:800x800", 0)].train.epochs == 12
    paper = h.plan(h.PROFILES["paper"], tmp_path)
    assert paper.runs[h.ensemble_key("mnist", paper.profile)].train.epochs == 60


def test_jittered_ensembles_jitter_members_and_distilled_models_alike(tmp_path: Path) -> None:
    """ensemble_jitter: the same shifted data for the members and the models distilled from
    them, in runs of their own (not the unjittered students alone of width x T)."""
    profile = replace(h.PROFILES["paper"], ensemble_jitter=2)
    the_plan = h.plan(profile, tmp_path, experiments=["ensemble"])
    distilled = the_plan.runs[h.ensemble_key("fashion-mnist", profile, 2)]
    assert h.ensemble_key("fashion-mnist", profile, 2).endswith("300x300-jitter2/seed2")
    members = [str(Path(m).relative_to(tmp_path.resolve())) for m in distilled.teachers]
    assert members == [f"fashion-mnist/hard-300x300-jitter2/seed{k}" for k in range(10)]
    assert {the_plan.runs[key].train.jitter for key in members} == {distilled.train.jitter} == {2}


def test_ensemble_weight_decay_regularises_members_and_students_alike(tmp_path: Path) -> None:
    """ensemble_weight_decay: the members and the models distilled from them decay their
    weights alike, in runs of their own; every other run keeps its settings and name."""
    unchanged = replace(h.PROFILES["paper"], regularised_ensembles=())  # one variant
    profile = replace(unchanged, ensemble_weight_decay=5e-4)
    the_plan = h.plan(profile, tmp_path)
    key = h.ensemble_key("mnist", profile, 0, 5.0)
    assert key == "mnist/ensemble10-distilled-300x300-wd0.0005-T5/seed0"
    distilled = the_plan.runs[key]
    members = [str(Path(m).relative_to(tmp_path.resolve())) for m in distilled.teachers]
    assert members[0] == "mnist/hard-300x300-wd0.0005/seed0"
    decays = {the_plan.runs[k].train.weight_decay for k in [*members, key]}
    assert decays == {5e-4}
    unchanged = h.plan(unchanged, tmp_path)
    assert the_plan.runs[h.hard_key("mnist", "mlp:300x300", 0)].train.weight_decay == 0.0
    others = {k: v for k, v in the_plan.runs.items() if "wd" not in k}
    assert len(the_plan.runs) - len(others) == 2 * (10 + 2 * 3)  # members, distilled at 2 T
    assert others == {k: unchanged.runs[k] for k in others}


def test_an_ensemble_can_be_distilled_into_another_model_than_its_members(tmp_path: Path) -> None:
    """ensemble_student_model: members with dropout, distilled into the same net without it
    (as the paper's MNIST student is its teacher without regularisers), in runs named by both."""
    members_model = "mlp:300x300,dropout=0.5,input_dropout=0.2"
    profile = replace(
        h.PROFILES["paper"], ensemble_model=members_model, ensemble_student_model="mlp:300x300"
    )
    the_plan = h.plan(profile, tmp_path, experiments=["ensemble"])
    key = h.ensemble_key("mnist", profile, 1, 5.0)
    assert (
        key
        == "mnist/ensemble10-of-300x300_dropout=0.5_input_dropout=0.2-distilled-300x300-T5/seed1"
    )
    distilled = the_plan.runs[key]
    assert distilled.model == "mlp:300x300"
    members = [str(Path(m).relative_to(tmp_path.resolve())) for m in distilled.teachers]
    assert members == [h.member_key("mnist", profile, k) for k in range(10)]
    assert {the_plan.runs[m].model for m in members} == {members_model}
    assert members[0] == "mnist/hard-300x300_dropout=0.5_input_dropout=0.2/seed0"


def test_paper_teacher_is_the_plain_train_command(tmp_path: Path) -> None:
    """A teacher made by `kdistill train` with the documented flags is reused, not retrained."""
    from kdistill.cli import _train_config, build_parser

    args = build_parser().parse_args(
        "train --dataset mnist "
        "--model mlp:1200x1200,dropout=0.5,input_dropout=0.2,input_mean=0.5,input_std=0.5 "
        "--max-norm 3.873 --jitter 2 --epochs 800 --lr 0.01 --schedule exponential "
        "--lr-decay 0.99309 --bf16 --seed 0".split()
    )
    command = RunSpec(model=args.model, dataset="mnist", train=_train_config(args))
    planned = h.plan(h.PROFILES["paper"], tmp_path).runs[h.teacher_key()]
    assert common.differences(asdict(command), asdict(planned)) == []


def test_the_small_data_baseline_is_the_plain_train_command(tmp_path: Path) -> None:
    """Experiment 6's hard-label student on 3% of the data is `kdistill train --fraction`."""
    from kdistill.cli import _train_config, build_parser

    args = build_parser().parse_args(
        "train --dataset mnist --model mlp:800x800 --fraction 0.03 --epochs 200 --lr 0.1 "
        "--grad-clip 1 --bf16 --seed 1".split()
    )
    command = RunSpec(
        model=args.model, dataset="mnist", train=_train_config(args), train_fraction=args.fraction
    )
    planned = h.plan(h.PROFILES["paper"], tmp_path, seeds=2).runs[h.small_key("hard", 1)]
    assert common.differences(asdict(command), asdict(planned)) == []


def test_a_finished_run_with_another_config_is_refused(tmp_path: Path) -> None:
    spec = RunSpec(model="mlp:8", dataset="digits")
    (tmp_path / "config.json").write_text(json.dumps({"kind": "train", **asdict(spec)}))
    common.check_same_run(tmp_path, spec)  # the same spec passes
    with pytest.raises(KDistillError, match="another config"):
        common.check_same_run(tmp_path, replace(spec, model="mlp:9"))


def test_the_committed_paper_runs_are_recognised_as_this_plans(tmp_path: Path) -> None:
    """docs/results/hinton2015 was made before losses were objects (temperature and alpha
    beside the other settings, some fields missing): each run is still its profile's run."""
    root = Path(__file__).resolve().parent.parent / "docs" / "results" / "hinton2015" / "runs"
    the_plan = h.plan(h.PROFILES["paper-v1"], root, seeds=3)
    made = [key for key in the_plan.runs if (root / key).is_dir()]
    # the plan has grown since by one run: the 30-30 student alone (the 300-300 one is an
    # ensemble member's run)
    assert sorted(set(the_plan.runs) - set(made)) == [h.hard_key("mnist", "mlp:30x30", 0)]
    for key in made:
        common.check_same_run(root / key, the_plan.runs[key])
    distilled = the_plan.runs[h.distill_key(800, 20, 0)]
    with pytest.raises(KDistillError, match=r"train.loss_args: .*'temperature': 20.0"):
        common.check_same_run(
            root / h.distill_key(800, 20, 0),
            replace(distilled, train=h.at_temperature(distilled.train, 4.0)),
        )


def test_the_committed_report_rows_come_from_its_run_records() -> None:
    """The rows of docs/results/hinton2015 that need no weights (main table, 3% of the data)
    are recomputed from its committed run records, figure for figure."""
    root = Path(__file__).resolve().parent.parent / "docs" / "results" / "hinton2015"
    the_plan = h.plan(h.PROFILES["paper-v1"], root / "runs", seeds=3)
    runs = common.FinishedRuns(the_plan, root / "runs")
    teacher = runs.test_errors([h.teacher_key()])
    alone = runs.test_errors([h.hard_key("mnist", "mlp:800x800", s) for s in range(3)])
    rows = h.main_table_rows(runs, teacher, alone) + h.small_data_rows(runs, alone)
    committed = {
        (r["experiment"], r["row"]): r for r in json.loads((root / "results.json").read_text())
    }
    assert len(rows) == 8
    for row in rows:
        record = common.result_record(row)
        written = committed[(row["experiment"], row["row"])]
        assert {key: record[key] for key in written} == written
    assert rows[2]["measured"] == 124.0 and rows[2]["gap_closed"] == round(100 * 13 / 41, 1)


@pytest.mark.parametrize(
    "folder, profile, alone_errors",
    [
        ("hinton2015-paper", "paper", [134, 137, 138]),
        ("hinton2015-paper-v2", "paper-v2", [149, 128, 143]),  # made as profile "paper"
    ],
)
def test_the_committed_paper_profile_report_comes_from_its_run_records(
    folder: str, profile: str, alone_errors: list[int]
) -> None:
    """docs/results/hinton2015-paper(-v2): every committed run is its profile's plan's, and
    the rows that need no weights (main table, width x T, 3% of the data) are its records'
    figures."""
    root = Path(__file__).resolve().parent.parent / "docs" / "results" / folder
    the_plan = h.plan(h.PROFILES[profile], root / "runs", seeds=3)
    assert sorted(the_plan.runs) == sorted(
        str(path.parent.relative_to(root / "runs"))
        for path in (root / "runs").glob("*/*/seed*/metrics.json")
    )
    for key, spec in the_plan.runs.items():
        common.check_same_run(root / "runs" / key, spec)
    runs = common.FinishedRuns(the_plan, root / "runs")
    teacher = runs.test_errors([h.teacher_key()])
    alone = runs.test_errors([h.hard_key("mnist", h.MAIN_STUDENT, s) for s in range(3)])
    rows = h.main_table_rows(runs, teacher, alone) + h.width_temperature_rows(runs, teacher)
    rows += h.small_data_rows(runs, alone)
    committed = {
        (r["experiment"], r["row"]): r for r in json.loads((root / "results.json").read_text())
    }
    for row in rows:
        assert common.result_record(row) == committed[(row["experiment"], row["row"])]
    assert (teacher.values, alone.values) == ([65], alone_errors)


def test_result_rows_say_how_far_from_the_paper() -> None:
    row = common.result_row("1.", "distilled", 74, [120, 124, 128], "errors", "60", gap=(137, 96))
    assert (row["measured"], row["std"], row["seeds"]) == (124.0, 4.0, 3)
    assert row["gap_closed"] == round(100 * (137 - 124) / (137 - 96), 1)
    assert common.verdict(row) == "WORSE than the paper"
    # a teacher no better than the student alone leaves no gap (not a negative share)
    assert common.gap_closed(90, (100, 110)) is None and common.gap_closed(90, (100, 100)) is None
    assert common.verdict({**row, "measured": 74.0}) == "matches or beats the paper"
    higher = common.result_row("5.", "kept", 86.4, [90.0], "%", "60", "higher")
    assert higher["std"] is None and higher["gap_closed"] is None
    assert common.verdict(higher) == "matches or beats the paper"
    assert common.verdict(common.result_row("2.", "T=4", None, [1], "errors", "60")) == ""
    assert h.ensemble_gain_kept(single=142.4, ensemble=126, distilled=140) == pytest.approx(
        100 * 2.4 / 16.4
    )
    assert math.isnan(h.ensemble_gain_kept(single=100, ensemble=100, distilled=90))
    assert h.small_gap_closed(early=900, soft=500, full=100) == 50.0
    nan = common.result_row("5.", "kept", 86.4, [math.nan], "%", "60", "higher")
    assert common.verdict(nan) == "" and common.result_record(nan)["measured"] is None


def test_holdout_is_disjoint_from_the_transfer_set() -> None:
    train = make_split(n=400, classes=4)
    train.images[:, 0, 0, 0] = torch.arange(400, dtype=torch.float32)  # an id per example
    spec = RunSpec(model="mlp:8", holdout_fraction=0.25, drop_classes=[1])
    seen = set(transfer_split(train, spec).images[:, 0, 0, 0].tolist())
    held = holdout_split(train, spec)
    assert len(held) == 100 and set(held.labels.tolist()) == {0, 1, 2, 3}
    assert not seen & set(held.images[:, 0, 0, 0].tolist())
    assert len(seen) == 300 - 75


def test_choose_shift_finds_the_bias_that_repairs_a_missing_class() -> None:
    torch.manual_seed(0)
    labels = torch.arange(1000) % 4
    logits = 4 * torch.nn.functional.one_hot(labels, 4).float() + torch.randn(1000, 4)
    logits[:, 2] -= 6.0  # class 2's bias far too low, as after a transfer set without 2s
    shift = h.choose_shift(logits, labels, [2], +1.0)
    assert 5.0 <= shift <= 7.0
    assert (h.shift_logits(logits, [2], shift).argmax(1) != labels).sum() < (
        logits.argmax(1) != labels
    ).sum()
    # lowering two biases that are too high: the search goes the other way
    logits[:, 2] += 6.0
    logits[:, [0, 1]] += 5.0
    assert -6.0 <= h.choose_shift(logits, labels, [0, 1], -1.0) <= -4.0


def test_a_shift_of_the_logits_is_a_shift_of_the_output_bias() -> None:
    model = build_model("mlp:16", (1, 6, 6), 4)
    images = make_split(n=32).images
    before = predict_logits(model, images)
    shift_output_bias_(model, {3: 2.5})
    assert torch.allclose(
        predict_logits(model, images), h.shift_logits(before, [3], 2.5), atol=1e-6
    )


def test_bad_profile_and_seeds_are_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(KDistillError, match="seeds"):
        h.plan(h.PROFILES["quick"], tmp_path, seeds=0)
    assert main(["reproduce", "hinton2015", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "kdistill: error: --seeds must be >= 1" in capsys.readouterr().err


def test_reproductions_are_listed_by_name(tmp_path: Path, capsys) -> None:
    assert main(["reproduce", "--list"]) == 0
    line, *others = capsys.readouterr().out.splitlines()
    assert line.startswith("hinton2015: Hinton, Vinyals & Dean (2015)")
    assert line.endswith("(profiles: quick, paper, paper-v1, paper-v2)")
    experiments, others = others[: len(h.EXPERIMENTS)], others[len(h.EXPERIMENTS) :]
    assert [e.split(":")[0].strip() for e in experiments] == [
        f"--experiment {name}" for name in h.EXPERIMENTS
    ]
    assert [other.split(":")[0] for other in others] == ["logit-losses"]
    assert main(["reproduce", "hinton2015", "--experiment", "omit4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hinton2015 has no experiment 'omit4': choose from main, width-temperature" in err
    assert main(["reproduce", "hinton2015", "--profile", "huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'huge': choose quick, paper, paper-v1, paper-v2" in err
    assert main(["reproduce"]) == 2
    assert "name the paper to reproduce (hinton2015, logit-losses)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def quick(shared_data: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """The quick profile, run once for the module (a few minutes on 2 cores)."""
    out = tmp_path_factory.mktemp("hinton2015-quick")
    lines: list[str] = []
    h.reproduce("quick", out, str(shared_data), progress=False, log=lines.append)
    return out, lines


def test_quick_profile_writes_the_report(quick: tuple[Path, list[str]]) -> None:
    out, lines = quick
    the_plan = h.plan(h.PROFILES["quick"], out)
    assert len([line for line in lines if line.startswith("[")]) == len(the_plan.runs)
    records = json.loads((out / "results.json").read_text())
    keys = {"experiment", "row", "paper", "measured", "std", "seeds", "unit"}
    assert all(keys <= set(record) for record in records)
    experiments = {record["experiment"][:2] for record in records}
    assert experiments == {"1.", "2.", "3.", "4.", "5.", "6."}
    report = (out / "REPORT.md").read_text()
    assert "| row" in report and "paper" in report and "## Worse than the paper" in report
    for png in ("width_temperature.png", "main_curves.png", "soft_targets.png", "bias_shift.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"] == len(the_plan.runs)
    # every run's commit is listed (here all the same: this checkout's)
    assert sum(meta["run_commits"].values()) == len(the_plan.runs)
    assert set(meta["run_commits"]) == {meta["environment"]["git_commit"]}
    assert f"`{meta['environment']['git_commit']}` ({len(the_plan.runs)})" in report
    # the teacher and the 3 members of each ensemble: their weights' sha256, in meta and report
    teachers = [h.teacher_key()] + [
        h.member_key(d, the_plan.profile, k) for d in ("mnist", "fashion-mnist") for k in range(3)
    ]
    assert list(meta["teachers_weights_sha256"]) == [k for k in the_plan.runs if k in teachers]
    teacher_sha = hashlib.sha256((out / h.teacher_key() / "model.safetensors").read_bytes())
    assert meta["teachers_weights_sha256"][h.teacher_key()] == teacher_sha.hexdigest()
    (line,) = [line for line in report.splitlines() if f"| `{h.teacher_key()}` " in line]
    assert f"| `{teacher_sha.hexdigest()}` |" in line


def test_quick_report_figures_are_those_of_the_run_records(quick: tuple[Path, list[str]]) -> None:
    """results.json regenerates from the run folders, and each figure is the runs' own."""
    out, _ = quick
    the_plan = h.plan(h.PROFILES["quick"], out)
    records = _records(out)
    assert records == [common.result_record(row) for row in h.results(the_plan, out)]

    def errors(key: str) -> int:
        return json.loads((out / key / "metrics.json").read_text())["test"]["errors"]

    rows = {(r["experiment"][:2], r["row"]): r for r in records}
    teacher, alone = errors(h.teacher_key()), errors(h.hard_key("mnist", "mlp:800x800", 0))
    distilled = rows[("1.", "student 800-800 distilled, T=20")]
    assert rows[("1.", "teacher 1200-1200, dropout, max-norm, jitter")]["measured"] == teacher
    assert rows[("1.", "student 800-800 alone")]["measured"] == alone
    assert distilled["measured"] == errors(h.distill_key(800, 20, 0))
    assert distilled["gap_closed"] == round(
        100 * (alone - distilled["measured"]) / (alone - teacher), 1
    )
    assert rows[("2.", "30-30 at T=4")]["measured"] == errors(h.distill_key(30, 4, 0))
    assert rows[("6.", "hard labels, early stopping")]["epochs"].startswith("best ")
    for dataset in ("mnist", "fashion-mnist"):
        members = [errors(h.member_key(dataset, the_plan.profile, k)) for k in range(3)]
        (single,) = [
            r
            for r in records
            if r["experiment"] == f"5. ensemble of 3 into one model ({dataset})"
            and r["row"] == "single mlp:100x100 (mean over members)"
        ]
        assert single["measured"] == pytest.approx(sum(members) / 3, abs=1e-4)
    # the shifts were chosen on the grid, and raise the missing 3 / lower the 7 and 8
    assert rows[("3.", "bias shift chosen on test (paper)")]["measured"] in h.SHIFT_GRID
    assert -rows[("4.", "bias shift chosen on test (paper)")]["measured"] in h.SHIFT_GRID
    report = (out / "REPORT.md").read_text()
    for record in records:  # the verdict of every row, and the list of those worse
        expected = _expected_verdict(record)
        assert _verdict_in(report, record) == expected
        if expected:
            listed = f"- {record['experiment']}: {record['row']}: {record['measured']:g} vs"
            assert (listed in report) == expected.startswith("WORSE")


def _expected_verdict(record: dict) -> str:
    """Lower is better, but for the shares (%); a bias shift has no better direction."""
    if record["paper"] is None or record["row"].startswith("bias shift"):
        return ""
    if record["measured"] is None:  # NaN
        return ""
    higher = record["unit"] == "%"
    worse = record["measured"] < record["paper"] if higher else record["measured"] > record["paper"]
    return "WORSE than the paper" if worse else "matches or beats the paper"


def _verdict_in(report: str, record: dict) -> str:
    """The verdict column of ``record``'s line in its experiment's table of REPORT.md."""
    section = report.split(f"## {record['experiment']}\n", 1)[1].split("\n## ", 1)[0]
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()]
    (cells,) = [cells for cells in table if cells[0] == record["row"]]
    return cells[-1]


def test_quick_profile_shows_the_papers_directions(quick: tuple[Path, list[str]]) -> None:
    out, _ = quick
    rows = {(r["experiment"][:2], r["row"]): r["measured"] for r in _records(out)}
    alone = rows[("1.", "student 800-800 alone")]
    distilled = rows[("1.", "student 800-800 distilled, T=20")]
    teacher = rows[("1.", "teacher 1200-1200, dropout, max-norm, jitter")]
    assert distilled < alone
    closed = {(r["experiment"][:2], r["row"]): r["gap_closed"] for r in _records(out)}
    main_closed = closed[("1.", "student 800-800 distilled, T=20")]
    assert main_closed == pytest.approx(100 * (alone - distilled) / (alone - teacher), abs=0.05)
    assert [v for (e, _), v in closed.items() if e == "4."] == [None] * 5  # no gap for 2 classes
    soft = rows[("6.", "soft targets of the full-data teacher, T=20")]
    assert soft < rows[("6.", "hard labels")] < rows[("6.", "hard labels, early stopping")]
    for width in (800, 300, 30):  # every width gains from distillation, at every T
        alone_width = rows[("2.", f"{width}-{width} alone")]
        at = [
            v for (e, row), v in rows.items() if e == "2." and row.startswith(f"{width}-{width} at")
        ]
        assert len(at) == 2 and max(at) < alone_width
    before = rows[("3.", "test errors")]
    for how in ("chosen on test (paper)", "chosen on held-out training data"):
        assert rows[("3.", f"test errors, shift {how}")] < before
        assert rows[("3.", f"errors on 3s, shift {how}")] < rows[("3.", "errors on the test 3s")]
        assert rows[("3.", f"bias shift {how}")] > 0
        assert rows[("4.", f"bias shift {how}")] < 0
    for dataset in ("mnist", "fashion-mnist"):  # the distilled model keeps part of the gain
        ensemble = {r["row"]: r["measured"] for r in _records(out) if dataset in r["experiment"]}
        members = ensemble["single mlp:100x100 (mean over members)"]
        distilled = ensemble["one mlp:100x100 distilled from the ensemble"]
        assert ensemble["ensemble (mean of probabilities)"] < distilled < members


def test_an_experiment_runs_alone_with_the_rows_it_is_compared_with(tmp_path: Path) -> None:
    profile = h.PROFILES["paper"]
    ensemble = h.plan(profile, tmp_path, experiments=["ensemble"])
    assert ensemble.experiments == ("ensemble",)
    assert h.teacher_key() not in ensemble.runs  # the ensemble distils its own members
    assert all(key.split("/")[1].startswith(("hard-300", "ensemble")) for key in ensemble.runs)
    omit = h.plan(profile, tmp_path, seeds=2, experiments=["omit3"])
    assert omit.experiments == ("main", "omit3")  # its rows are compared with the main table
    full = h.plan(profile, tmp_path, seeds=2)
    assert list(omit.runs) == [key for key in full.runs if key in omit.runs]
    assert set(omit.runs) == {h.teacher_key()} | {
        key(seed)
        for seed in range(2)
        for key in (
            lambda s: h.hard_key("mnist", h.MAIN_STUDENT, s),
            lambda s: h.distill_key(h.MAIN_WIDTH, h.MAIN_TEMPERATURE, s),
            h.omit_key,
        )
    }


def test_one_experiment_reports_its_rows_as_the_whole_report_does(quick, tmp_path: Path) -> None:
    out, _ = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    data_dir = json.loads((out / h.teacher_key() / "config.json").read_text())["data_dir"]
    lines: list[str] = []
    h.reproduce("quick", copy, data_dir, progress=False, log=lines.append, experiments=["only78"])
    runs = [line for line in lines if line.startswith("[")]
    assert len(runs) == 4 and all("already done" in line for line in runs)
    records = _records(copy)
    assert {r["experiment"][:2] for r in records} == {"1.", "4."}
    assert records == [r for r in _records(out) if r["experiment"][:2] in ("1.", "4.")]
    report = (copy / "REPORT.md").read_text()
    assert "- experiments: main, only78 (of the paper's 6)" in report
    assert "## 3." not in report and "bias_shift.png" in report


def test_a_finished_reproduction_is_not_run_again(quick: tuple[Path, list[str]]) -> None:
    out, _ = quick
    lines: list[str] = []
    data_dir = json.loads((out / h.teacher_key() / "config.json").read_text())["data_dir"]
    before = _records(out)
    h.reproduce("quick", out, data_dir, progress=False, log=lines.append)
    runs = [line for line in lines if line.startswith("[")]
    assert runs and all("already done" in line for line in runs)
    assert _records(out) == before


def test_a_finished_teacher_is_reused_not_retrained(quick, tmp_path: Path) -> None:
    out, _ = quick
    source = out / h.teacher_key()
    planned = h.plan(h.PROFILES["quick"], tmp_path / "new").runs[h.teacher_key()]
    with pytest.raises(KDistillError, match="another config"):  # not this profile's teacher
        paper = h.plan(h.PROFILES["paper"], tmp_path / "new").runs[h.teacher_key()]
        common.reuse_teacher(source, tmp_path / "new" / h.teacher_key(), paper)
    assert not (tmp_path / "new").exists()  # refused: nothing written
    common.reuse_teacher(source, tmp_path / "new" / h.teacher_key(), planned)
    for name in common.TEACHER_FILES:
        copied = tmp_path / "new" / h.teacher_key() / name
        assert copied.read_bytes() == (source / name).read_bytes()


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("name", ["quick", "paper", "paper-v2"])
def test_every_student_of_a_profile_trains_with_one_optimiser(name: str, tmp_path: Path) -> None:
    """Alone or distilled, at any width: one optimiser per profile, so comparisons are fair."""
    the_plan = h.plan(h.PROFILES[name], tmp_path, seeds=2)
    students = [spec for key, spec in the_plan.runs.items() if key != h.teacher_key()]

    def optimiser(spec: RunSpec) -> tuple:
        train = spec.train
        return (train.optimizer, train.lr, train.momentum, train.schedule, train.bf16)

    assert len({optimiser(spec) for spec in students}) == 1
    # an ensemble's student clips its gradient in every profile (ENSEMBLE_GRAD_CLIP)
    clips = {spec.train.grad_clip for spec in students if len(spec.teachers) <= 1}
    expected = ("adam", 1e-3, {None}) if name == "paper-v2" else ("sgd", 0.1, {1.0})
    assert (*optimiser(students[0])[:2], clips) == expected
