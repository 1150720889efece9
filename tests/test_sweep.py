"""kdistill sweep: the grid as data, one teacher pass for all cells, exact, resumable."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from itertools import product
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdistill.runs as runs_module
import kdistill.sweep as sweep_module
from kdistill.cli import main
from kdistill.errors import KDistillError
from kdistill.runs import RunSpec, execute
from kdistill.sweep import Sweep, figure_name, plot_sweep, run_sweep, summarize
from kdistill.train import TrainConfig

SETTINGS = TrainConfig(epochs=2, batch_size=256, lr=0.05, device="cpu")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher") / "run"
    execute(RunSpec(model="mlp:64", train=replace(SETTINGS, epochs=4)), folder, progress=False)
    return folder


def _sweep(teacher: Path, **changes) -> Sweep:
    base = RunSpec(model="mlp:16", teachers=[str(teacher)], train=SETTINGS)
    return Sweep(base=base, **({"temperatures": [1.0, 4.0], "alphas": [0.5, 1.0]} | changes))


def test_sweep_shares_teacher_logits_exactly_and_resumes(
    teacher: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    passes, executed = [], []
    real_logits, real_execute = sweep_module.predict_logits, runs_module.execute
    monkeypatch.setattr(
        sweep_module, "predict_logits", lambda *a, **k: passes.append(1) or real_logits(*a, **k)
    )
    monkeypatch.setattr(
        runs_module, "execute", lambda spec, out, **kw: executed.append(out.name) or real_execute(
            spec, out, **kw
        ),
    )  # fmt: skip
    sweep = _sweep(teacher)
    rows = run_sweep(sweep, tmp_path, progress=False)
    assert len(passes) == 1  # one teacher pass for the 4 runs
    assert len(rows) == len(executed) == 4
    assert [(r["temperature"], r["alpha"], r["seed"]) for r in rows] == [
        (t, a, 0) for t in (1.0, 4.0) for a in (0.5, 1.0)
    ]
    with open(tmp_path / "sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [int(r["test_errors"]) for r in table] == [r["test_errors"] for r in rows]
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The shared logits give bit-for-bit the run that computes its own teacher logits.
    name, spec = sweep.cells()[2]
    execute(spec, tmp_path / "alone", progress=False)
    alone, shared = (
        load_file(p / "model.safetensors") for p in (tmp_path / "alone", tmp_path / name)
    )
    assert all((alone[k] == shared[k]).all() for k in alone)

    # Re-running does nothing; a cell killed after its first epoch continues from there.
    (tmp_path / name / "metrics.json").unlink()
    executed.clear()
    again = run_sweep(sweep, tmp_path, progress=False)
    assert executed == [name]
    untimed = [
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in t] for t in (again, rows)
    ]
    assert untimed[0] == untimed[1]
    assert "(resuming)" in capsys.readouterr().out

    # A finished cell made with other settings is not silently reused.
    with pytest.raises(ValueError, match="other settings"):
        run_sweep(replace(sweep, base=replace(sweep.base, model="mlp:17")), tmp_path)


def test_seeds_are_consecutive_from_the_base_seed(teacher: Path) -> None:
    sweep = _sweep(teacher, temperatures=[2.0], alphas=[0.9], seeds=3)
    sweep.base.train = replace(SETTINGS, seed=5)
    names = [name for name, _ in sweep.cells()]
    assert names == ["T2-alpha0.9-seed5", "T2-alpha0.9-seed6", "T2-alpha0.9-seed7"]
    assert [spec.train.seed for _, spec in sweep.cells()] == [5, 6, 7]


def test_sweep_cli_prints_table_and_writes_files(teacher: Path, tmp_path: Path, capsys) -> None:
    status = main([
        "sweep", "--teacher", str(teacher), "--model", "mlp:16", "--temperature", "2,8",
        "--alpha", "1", "--epochs", "1", "--batch-size", "256", "--device", "cpu",
        "--no-progress", "--out", str(tmp_path),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "mean_test_errors" in out and "| 8 " in out and "| 2 " in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "T2-alpha1-seed0", "T8-alpha1-seed0"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["--temperature", ""], "temperature grid is empty"),
        (["--alpha", ","], "alpha grid is empty"),
        (["--temperature", "1,0,4"], "temperature must be a finite number > 0"),
        (["--temperature", "1,x"], "comma-separated numbers"),
        (["--alpha", "0.5,1.5"], "alpha"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--teacher", "no/such/run"], "does not exist"),
    ],
)
def test_sweep_bad_input_is_one_line_error(
    teacher: Path, tmp_path: Path, capsys, grid: list[str], message: str
) -> None:
    args = ["sweep", "--model", "mlp:8", "--out", str(tmp_path / "s"), "--no-progress"]
    if "--teacher" not in grid:
        args += ["--teacher", str(teacher)]
    status = main(args + grid)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("kdistill: error:") and message in err
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------- any registered loss's arguments

FAST = ["--model", "mlp:16", "--epochs", "2", "--batch-size", "256", "--lr", "0.05",
        "--device", "cpu", "--no-progress"]  # fmt: skip
DKD = ["--loss", "dkd", "--loss-arg", "beta=1,4", "--loss-arg", "warmup=0"]


def test_sweep_over_dkd_beta_records_the_arguments_and_equals_distill(
    teacher: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--teacher", str(teacher), *DKD, *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| beta | warmup | seeds | mean_test_errors" in printed
    assert "(sweep.csv, lineplot.png)" in printed  # one argument varies: a line plot
    names = ["beta1-warmup0-seed0", "beta4-warmup0-seed0"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    with open(out / "sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:3] == ["beta", "warmup", "seed"]
    assert [(r["beta"], r["warmup"], r["run"]) for r in table] == [
        ("1.0", "0", names[0]), ("4.0", "0", names[1])
    ]  # fmt: skip
    for row, name, beta in zip(table, names, (1.0, 4.0), strict=True):
        config = json.loads((out / name / "config.json").read_text())
        assert config["train"]["loss"] == "dkd"
        assert config["train"]["loss_args"] == {
            "alpha": 1.0, "beta": beta, "temperature": 4.0, "ce_weight": 1.0, "warmup": 0,
            "standardize": False,
        }  # fmt: skip
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert int(row["test_errors"]) == metrics["test"]["errors"]
        assert float(row["test_loss"]) == round(metrics["test"]["loss"], 6)
    assert (out / "lineplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The swept value reaches the loss: the two cells differ only in beta, and train apart.
    histories = [(out / n / "history.csv").read_text() for n in names]
    assert histories[0] != histories[1]
    # A cell is bit for bit the `distill` run with the same loss and arguments.
    alone = tmp_path / "alone"
    distill = ["distill", "--teacher", str(teacher), "--loss", "dkd", "--loss-arg", "beta=4"]
    assert main([*distill, "--loss-arg", "warmup=0", *FAST, "--out", str(alone)]) == 0
    a, b = (load_file(p / "model.safetensors") for p in (alone, out / names[1]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (alone / "history.csv").read_text().splitlines()[1].split(",")[:3] == histories[
        1
    ].splitlines()[1].split(",")[:3]


def test_jsd_sweep_of_two_arguments_is_a_heat_map(teacher: Path, tmp_path: Path) -> None:
    base = RunSpec(model="mlp:16", teachers=[str(teacher)], train=replace(SETTINGS, loss="jsd"))
    sweep = Sweep(base, grid={"temperature": [1, 4], "beta": [0.2, 0.8]})
    assert sweep.arguments() == {"beta": [0.2, 0.8], "temperature": [1, 4]}  # the loss's order
    rows = run_sweep(sweep, tmp_path, progress=False)
    assert [(r["beta"], r["temperature"], r["run"]) for r in rows] == [
        (0.2, 1.0, "beta0.2-T1-seed0"), (0.2, 4.0, "beta0.2-T4-seed0"),
        (0.8, 1.0, "beta0.8-T1-seed0"), (0.8, 4.0, "beta0.8-T4-seed0"),
    ]  # fmt: skip
    assert (tmp_path / "heatmap.png").is_file() and not (tmp_path / "lineplot.png").exists()
    for row in rows:
        args = json.loads((tmp_path / row["run"] / "config.json").read_text())["train"]
        assert args["loss"] == "jsd"
        assert (args["loss_args"]["beta"], args["loss_args"]["temperature"]) == (
            row["beta"], row["temperature"]
        )  # fmt: skip
    assert len({r["test_loss"] for r in rows}) == 4  # every argument reached the loss
    summary = summarize(rows)
    assert list(summary[0])[:3] == ["beta", "T", "seeds"]
    assert summary[0]["mean_test_errors"] == min(r["test_errors"] for r in rows)
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["loss"] == "jsd" and record["arguments"] == sweep.arguments()


def test_resume_skips_finished_cells_and_refuses_other_settings(
    teacher: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--teacher", str(teacher), *DKD, *FAST, "--out", str(out)]
    assert main(argv) == 0
    first = (out / "sweep.csv").read_text()
    executed = []
    real_execute = runs_module.execute
    monkeypatch.setattr(
        runs_module, "execute", lambda spec, o, **kw: executed.append(o.name) or real_execute(
            spec, o, **kw
        ),
    )  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0  # all finished: nothing runs, the same table
    assert executed == [] and "[1/2]" not in capsys.readouterr().out
    assert (out / "sweep.csv").read_text() == first
    (out / "beta4-warmup0-seed0" / "metrics.json").unlink()  # killed after its last checkpoint
    assert main(argv) == 0
    assert executed == ["beta4-warmup0-seed0"]
    assert "[2/2] beta4-warmup0-seed0 (resuming)" in capsys.readouterr().out

    # The same folders with another setting, or another fixed argument of the loss: compat's
    # one rule (config_differences) says another run, and the sweep stops before any work.
    assert main([*argv, "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "beta1-warmup0-seed0 holds a run with other settings (train.lr: 0.05 -> 0.1)" in err
    train = replace(SETTINGS, loss="dkd", loss_args={"temperature": 2.0})
    other = Sweep(RunSpec(model="mlp:16", teachers=[str(teacher)], train=train),
                  grid={"beta": [1, 4], "warmup": [0]})  # fmt: skip
    with pytest.raises(ValueError, match=r"other settings \(train.loss_args: .*'temperature': 4.0"):
        run_sweep(other, out, progress=False)
    assert executed == ["beta4-warmup0-seed0"]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["--loss", "nosuch"], "unknown loss 'nosuch': choose one of"),
        (["--loss", "dkd", "--loss-arg", "gamma=1,2"],
         "loss 'dkd' takes no argument 'gamma'; its arguments are alpha, beta, temperature"),
        (["--loss", "tv", "--alpha", "0.5,1"], None),  # tv takes alpha: accepted (see below)
        (["--loss", "dist", "--alpha", "0.5"], "loss 'dist' takes no argument 'alpha'"),
        (["--loss", "jsd", "--loss-arg", "beta=0.5,x"], "beta must be a number, got 'x'"),
        (["--loss", "jsd", "--loss-arg", "beta=0.5,1"], "beta (the teacher's weight"),
        (["--loss", "dkd", "--loss-arg", "temperature=2,0"], "temperature must be a finite"),
        (["--loss", "jsd", "--loss-arg", "alpha=0.5,1.5"], "alpha (the weight of the soft"),
        (["--loss", "dkd", "--loss-arg", "alpha=0", "--loss-arg", "beta=0",
          "--loss-arg", "ce_weight=1,0"], "all 0"),
        (["--loss", "jsd", "--loss-arg", "beta="], "the beta grid is empty"),
        (["--loss", "jsd", "--loss-arg", "beta"], "--loss-arg takes KEY=VALUE"),
        (["--loss", "jsd", "--loss-arg", "beta=0.2", "--loss-arg", "beta=0.4"], "given twice"),
        (["--loss", "jsd", "--loss-arg", "beta=0.2,0.20"], "repeated beta"),
        (["-T", "2", "--loss-arg", "temperature=4"], "give one"),
        (["--loss", "skew-kl", "--loss-arg", "skew=0.1,1"], "skew"),
    ],
)  # fmt: skip
def test_a_refused_loss_grid_writes_nothing(
    teacher: Path, tmp_path: Path, capsys, monkeypatch, grid: list[str], message: str | None
) -> None:
    started = []

    def first_run(*args, **kwargs):
        started.append(args)
        raise KDistillError("the first run starts")

    monkeypatch.setattr(runs_module, "execute", first_run)
    out = tmp_path / "s"
    status = main(["sweep", "--teacher", str(teacher), *FAST, "--out", str(out), *grid])
    err = capsys.readouterr().err
    if message is None:  # a valid grid reaches the first run (stubbed here) ...
        assert len(started) == 1 and "the first run starts" in err
        return
    assert status == 2 and started == []
    assert err.count("\n") == 1 and err.startswith("kdistill: error:") and message in err
    assert not out.exists()  # ... a refused one, checked cell by cell first, writes nothing


def test_a_bad_teacher_logits_file_is_refused_before_the_sweep_folder(tmp_path, capsys) -> None:
    bad = tmp_path / "teacher.logits"
    bad.write_bytes(b"not a safetensors file")
    out = tmp_path / "s"
    argv = ["sweep", "--teacher-logits", str(bad), *DKD, *FAST, "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()


def test_hinton_keeps_its_default_grid_and_other_losses_have_none(teacher: Path) -> None:
    sweep = _sweep(teacher, temperatures=None, alphas=None)
    assert sweep.arguments() == {"temperature": [1, 2, 4, 8, 20], "alpha": [0.1, 0.5, 0.9]}
    assert [n for n, _ in sweep.cells()][:2] == ["T1-alpha0.1-seed0", "T1-alpha0.5-seed0"]
    assert sweep.cells()[0][1].train.loss_args == {"temperature": 1.0, "alpha": 0.1}
    only_t = _sweep(teacher, temperatures=[2.0], alphas=None)
    assert only_t.arguments() == {"temperature": [2.0], "alpha": [0.1, 0.5, 0.9]}
    jsd = replace(sweep.base, train=replace(SETTINGS, loss="jsd", loss_args={"beta": 0.3}))
    assert Sweep(jsd, temperatures=[1.0, 2.0]).arguments() == {"temperature": [1.0, 2.0]}
    assert [n for n, _ in Sweep(jsd, seeds=2).cells()] == ["seed0", "seed1"]
    assert Sweep(jsd, seeds=2).cells()[1][1].train.loss_args == {"beta": 0.3}


def test_figure_follows_the_number_of_varied_arguments(tmp_path: Path) -> None:
    def rows(**grid) -> list[dict]:
        cells = [dict(zip(grid, values, strict=True)) for values in product(*grid.values())]
        return [{**c, "seed": 0, "test_errors": i, "val_errors": None} for i, c in enumerate(cells)]

    one = rows(beta=[1.0, 8.0], warmup=[0])
    assert figure_name(one) == "lineplot.png"
    words = rows(standardize=[True, False])  # not numbers: evenly spaced, labelled
    three = rows(temperature=[1.0, 4.0], alpha=[0.5, 1.0], standardize=[False, True])
    assert figure_name(three) == "heatmap.png"
    assert summarize(three)[0] == {
        "T": 1.0, "alpha": 0.5, "standardize": False, "seeds": 1, "mean_test_errors": 0,
        "std": None, "min": 0, "max": 0,
    }  # fmt: skip
    for data in (one, words, three, rows(beta=[2.0])):
        path = plot_sweep(data, tmp_path / f"{len(data)}-{figure_name(data)}")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
