"""`kdistill reproduce logit-losses`: the plan as data (the same student and optimiser for every
loss, grids on held-out data, the chosen settings with every seed), the verdict sentence, the
one-line errors, and the quick profile end to end on real MNIST and Fashion-MNIST: every figure
of results.json is recomputed from the run records."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from kdistill.cli import main
from kdistill.errors import KDistillError
from kdistill.experiments import common, reproduction
from kdistill.experiments import hinton2015 as h
from kdistill.experiments import logit_losses as ll
from kdistill.runs import cached_dataset, holdout_split, load_run_model, read_history
from kdistill.train import evaluate, predict_logits

QUICK = ll.PROFILES["quick"]
LOSSES = ["hinton", "reverse-kl", "jsd", "tv", "skew-kl", "skew-reverse-kl", "dkd", "dist"]


def _choices(profile: ll.Profile) -> dict:
    """A choice per loss and dataset: the grid's last value (as :func:`ll.choose` returns)."""
    return {
        dataset: {
            grid.loss: {
                "value": grid.values[-1],
                "label": grid.label(grid.values[-1]),
                "loss_args": grid.loss_args(grid.values[-1]),
            }
            for grid in profile.grids
        }
        for dataset in profile.datasets
    }


def test_registered_and_every_loss_has_a_grid() -> None:
    assert reproduction("logit-losses") is ll.REPRODUCTION
    for profile in ll.PROFILES.values():
        assert [grid.loss for grid in profile.grids] == LOSSES
        assert profile.datasets == ("mnist", "fashion-mnist")
    assert all(len(grid.values) == 3 for grid in ll.PROFILES["paper"].grids)
    assert all(len(grid.values) == 2 for grid in QUICK.grids)


@pytest.mark.parametrize("profile_name, seeds", [("quick", 1), ("quick", 2), ("paper", 3)])
def test_plan_is_data_in_two_stages(tmp_path: Path, profile_name: str, seeds: int) -> None:
    profile = ll.PROFILES[profile_name]
    cells = sum(len(grid.values) for grid in profile.grids)
    first = ll.plan(profile, tmp_path, seeds=seeds)
    assert len(first.runs) == 2 * (1 + seeds + cells)
    full = ll.plan(profile, tmp_path, seeds=seeds, choices=_choices(profile))
    assert list(full.runs)[: len(first.runs)] == list(first.runs)  # the first stage, then more
    assert len(full.runs) == len(first.runs) + 2 * len(LOSSES) * seeds
    for dataset in profile.datasets:
        teacher = full.runs[ll.teacher_key(dataset)]
        assert teacher.model == profile.teacher_model and teacher.dataset == dataset
        teacher_folder = str((tmp_path / ll.teacher_key(dataset)).resolve())
        students = {k: s for k, s in full.runs.items() if k.startswith(f"{dataset}/")}
        del students[ll.teacher_key(dataset)]
        for key, spec in students.items():
            # the same student, data and optimiser for every run; only the loss and seed vary
            assert spec.model == profile.student_model and spec.dataset == dataset
            assert spec.train_fraction == profile.data_fraction
            same = replace(spec.train, loss=profile.student.loss, loss_args={}, seed=0)
            assert same == replace(profile.student, loss_args={}, seed=0), key
            grid_run = "/grid/" in key
            assert spec.holdout_fraction == (profile.holdout_fraction if grid_run else 0.0)
            if grid_run:
                assert spec.train.seed == 0
            if "/alone/" in key:
                assert spec.teachers == [] and spec.train.loss is None
            else:
                assert spec.teachers == [teacher_folder]
        for grid in profile.grids:
            for seed in range(seeds):
                final = full.runs[ll.final_key(dataset, grid.loss, seed)]
                assert final.train.loss == grid.loss and final.train.seed == seed
                assert final.train.loss_args == grid.loss_args(grid.values[-1])


def test_paper_teacher_on_mnist_is_hinton2015s_so_the_committed_one_is_reused(
    tmp_path: Path,
) -> None:
    mine = ll.plan(ll.PROFILES["paper"], tmp_path).runs[ll.teacher_key("mnist")]
    theirs = h.plan(h.PROFILES["paper"], tmp_path).runs[h.teacher_key()]
    assert ll.REPRODUCTION.teacher_key == ll.teacher_key("mnist") == h.teacher_key()
    assert common.differences(asdict(theirs), asdict(mine)) == []
    committed = Path(__file__).resolve().parent.parent / "docs/results/paper-teacher"
    config = json.loads((committed / "config.json").read_text())
    assert common.differences(config, asdict(mine)) == []


def _row(dataset: str, kind: str, name: str, measured: float, std: float | None) -> dict:
    return {
        "dataset": dataset,
        "kind": kind,
        "row": name,
        "setting": "T=4" if kind == "loss" else "",
        "measured": measured,
        "std": std,
        "gap_closed": 50.0 if kind == "loss" else None,
    }


@pytest.mark.parametrize(
    "std, said",
    [
        (2.0, "more than twice the seed-to-seed std: a clear lead"),
        (7.0, "more than the seed-to-seed std but less than twice it: a weak lead"),
        (12.0, "within the seed-to-seed std: no clear winner"),
        (None, "with one seed there is no seed-to-seed std"),
    ],
)
def test_the_verdict_is_read_from_the_numbers(std: float | None, said: str) -> None:
    rows = [
        _row("mnist", "test", "teacher mlp:64x64", 60, None),
        _row("mnist", "test", "student mlp:32x32 alone", 120, std),
        _row("mnist", "loss", "tv", 110, std),
        _row("mnist", "loss", "dkd", 100, std),  # the winner, whatever its place in the rows
        _row("mnist", "loss", "hinton", 130, std),
    ]
    sentence = ll.verdict_sentence(rows, "mnist")
    assert sentence.startswith("`dkd` (T=4) has the fewest test errors, 100")
    assert "10 fewer than the runner-up `tv` (110)" in sentence
    assert said in sentence
    assert "no loss beats the student alone" not in sentence
    assert "no gap to close" not in sentence
    rows[1]["measured"] = 100  # the student alone as good as the best loss
    assert "no loss beats the student alone" in ll.verdict_sentence(rows, "mnist")
    assert (ll.mean_errors(86 + 1 / 3), ll.mean_errors(90.0)) == ("86.3", "90")
    rows[0]["measured"] = 130  # a teacher worse than the student alone
    assert "the teacher (130) is no better than the student alone, so there is no gap to close" in (
        ll.verdict_sentence(rows, "mnist")
    )


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    for argv, message in (
        (["--profile", "huge"], "unknown profile 'huge': choose quick, paper"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--teacher-run", str(tmp_path / "none")], "is not a finished run"),
    ):
        assert main(["reproduce", "logit-losses", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kdistill: error: ") and message in err
        assert not out.exists()
    bad = replace(QUICK, grids=(ll.LossGrid("jsd", "beta", (0.5, 1.0)),))  # beta = 1 refused
    with pytest.raises(KDistillError, match="jsd"):
        ll.reproduce(bad, out)
    with pytest.raises(KDistillError, match="no setting chosen for reverse-kl on mnist"):
        ll.plan(QUICK, out, choices={"mnist": {"hinton": {"loss_args": {}}}})
    assert not out.exists()


# --------------------------------------------------------------------------- the quick profile


@pytest.fixture(scope="module")
def quick(shared_data: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """The quick profile, run once for the module (2-3 minutes on 2 shared cores)."""
    out = tmp_path_factory.mktemp("logit-losses-quick")
    lines: list[str] = []
    ll.reproduce("quick", out, str(shared_data), progress=False, log=lines.append)
    return out, lines


def _full_plan(out: Path, data_dir: str | None = None) -> common.Plan:
    first = ll.plan(QUICK, out, data_dir)
    return ll.plan(QUICK, out, data_dir, choices=ll.choose(first, out))


def _metrics(out: Path, key: str) -> dict:
    return json.loads((out / key / "metrics.json").read_text())


def test_quick_results_are_those_of_the_run_records(quick: tuple[Path, list[str]]) -> None:
    out, lines = quick
    data_dir = json.loads((out / ll.teacher_key("mnist") / "config.json").read_text())["data_dir"]
    the_plan = _full_plan(out, data_dir)
    assert len(the_plan.runs) == 52
    assert len([line for line in lines if line.startswith("[")]) == len(the_plan.runs)
    records = json.loads((out / "results.json").read_text())
    assert records == [common.result_record(row) for row in ll.results(the_plan, out)]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"] == 52 and meta["choices"] == the_plan.choices

    for dataset in QUICK.datasets:
        data = cached_dataset(dataset, data_dir)
        tests = {
            r["row"]: r
            for r in records
            if r.get("kind") in ("test", "loss") and r["dataset"] == dataset
        }
        teacher = _metrics(out, ll.teacher_key(dataset))["test"]["errors"]
        alone = _metrics(out, ll.alone_key(dataset, 0))["test"]["errors"]
        assert tests[f"teacher {QUICK.teacher_model}"]["measured"] == teacher
        assert tests[f"student {QUICK.student_model} alone"]["measured"] == alone
        teacher_model, _ = load_run_model(out / ll.teacher_key(dataset))
        teacher_says = predict_logits(teacher_model, data.test.images).argmax(1)
        for grid in QUICK.grids:
            key = ll.final_key(dataset, grid.loss, 0)
            row = tests[grid.loss]
            errors = _metrics(out, key)["test"]["errors"]
            assert row["measured"] == errors and row["values"] == [errors]
            closed = round(100 * (alone - errors) / (alone - teacher), 1)
            assert row["gap_closed"] == (closed if teacher < alone else None)
            says = predict_logits(load_run_model(out / key)[0], data.test.images).argmax(1)
            agree = 100 * float((says == teacher_says).float().mean())
            assert row["agreement"] == round(agree, 2)
            epochs = [r["seconds"] for r in read_history(out / key / "history.csv")]
            assert row["seconds_per_epoch"] == round(statistics.median(epochs), 3)
            # the setting: the grid cell with the fewest held-out errors, scored on data the
            # grid runs never trained on; the final run trained with it
            cells = [
                r
                for r in records
                if r.get("kind") == "grid" and r["dataset"] == dataset and r["row"] == grid.loss
            ]
            assert [c["setting"] for c in cells] == [grid.label(v) for v in grid.values]
            for cell, value in zip(cells, grid.values, strict=True):
                grid_key = ll.grid_key(dataset, grid, value)
                spec = the_plan.runs[grid_key]
                held = holdout_split(data.train, spec)
                assert cell["unit"] == f"held-out errors / {len(held):,}"
                assert abs(len(held) - 6000) <= 5  # a stratified 10% of the full training set
                scored = evaluate(load_run_model(out / grid_key)[0], held)
                assert cell["measured"] == scored["errors"]
            best = min(cells, key=lambda c: (c["measured"], c["held_out_cross_entropy"]))
            assert [c["chosen"] for c in cells] == [c is best for c in cells]
            assert row["setting"] == best["setting"]
            config = json.loads((out / key / "config.json").read_text())
            chosen_value = grid.values[cells.index(best)]
            assert config["train"]["loss_args"] == {
                **config["train"]["loss_args"],
                **grid.loss_args(chosen_value),
            }


def test_quick_report_says_what_the_numbers_say(quick: tuple[Path, list[str]]) -> None:
    out, _ = quick
    records = json.loads((out / "results.json").read_text())
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# Logit-distillation losses, one comparison: measured")
    assert "## Worse than the paper" not in report  # no paper figures here
    assert (out / "test_errors.png").read_bytes()[:4] == b"\x89PNG"
    assert "](test_errors.png)" in report
    for dataset in QUICK.datasets:
        losses = [r for r in records if r.get("kind") == "loss" and r["dataset"] == dataset]
        best = min(losses, key=lambda r: r["measured"])
        line = f"- {dataset}: `{best['row']}` ({best['setting']}) has the fewest test errors, "
        assert line + ll.mean_errors(best["measured"]) in report
        assert "with one seed there is no seed-to-seed std" in report
        for row in losses:
            table = report.split(f"## test errors ({dataset})\n", 1)[1].split("\n## ", 1)[0]
            (cells,) = [
                [c.strip() for c in line.strip("|").split("|")]
                for line in table.splitlines()
                if line.startswith(f"| {row['row']} ")
            ]
            assert cells[1:3] == [row["setting"], ll.mean_errors(row["measured"])]
            assert cells[6] == f"{row['agreement']:.2f}%"


def test_a_finished_comparison_is_not_run_again(quick: tuple[Path, list[str]]) -> None:
    out, _ = quick
    data_dir = json.loads((out / ll.teacher_key("mnist") / "config.json").read_text())["data_dir"]
    before = json.loads((out / "results.json").read_text())
    lines: list[str] = []
    ll.reproduce("quick", out, data_dir, progress=False, log=lines.append)
    runs = [line for line in lines if line.startswith("[")]
    assert len(runs) == 52 and all("already done" in line for line in runs)
    assert json.loads((out / "results.json").read_text()) == before


def test_the_committed_paper_run_is_this_plan_and_its_figures_its_records() -> None:
    """docs/results/logit-losses-paper: every committed run is the paper plan's (with the
    choices its meta.json records), and every test-set figure of results.json but agreement
    (which needs weights) is its run records': errors per seed, mean, std, gap closed,
    seconds per epoch, the chosen setting; the report's verdicts are those of these rows."""
    root = Path(__file__).resolve().parent.parent / "docs" / "results" / "logit-losses-paper"
    meta = json.loads((root / "meta.json").read_text())
    profile = ll.PROFILES["paper"]
    the_plan = ll.plan(profile, root / "runs", seeds=3, choices=meta["choices"])
    made = (root / "runs").glob("**/metrics.json")
    assert sorted(the_plan.runs) == sorted(str(p.parent.relative_to(root / "runs")) for p in made)
    for key, spec in the_plan.runs.items():
        common.check_same_run(root / "runs" / key, spec)
    runs = common.FinishedRuns(the_plan, root / "runs")
    records = json.loads((root / "results.json").read_text())
    report = (root / "REPORT.md").read_text()
    for dataset in profile.datasets:
        rows = {
            r["row"]: r
            for r in records
            if r.get("kind") in ("test", "loss") and r["dataset"] == dataset
        }
        teacher = runs.test_errors([ll.teacher_key(dataset)])
        alone = runs.test_errors([ll.alone_key(dataset, s) for s in range(3)])
        alone_row = common.result_row("", "", None, alone.values, ll.ERRORS, alone.epochs)
        assert rows[f"student {profile.student_model} alone"]["values"] == alone.values
        gap = (alone_row["measured"], teacher.mean)
        for grid in profile.grids:
            keys = [ll.final_key(dataset, grid.loss, s) for s in range(3)]
            measured = runs.test_errors(keys)
            expected = common.result_row(
                "", "", None, measured.values, ll.ERRORS, measured.epochs, gap=gap
            )
            row = rows[grid.loss]
            assert row["values"] == measured.values
            assert [row[k] for k in ("measured", "std", "gap_closed")] == [
                expected[k] for k in ("measured", "std", "gap_closed")
            ]
            assert row["seconds_per_epoch"] == round(ll.seconds_per_epoch(root / "runs", keys), 3)
            assert row["setting"] == meta["choices"][dataset][grid.loss]["label"]
        assert ll.verdict_sentence(records, dataset) in report
    assert teacher.values == [998] and alone.values == [967, 977, 985]  # fashion-mnist
