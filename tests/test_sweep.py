"""kdistill sweep: the grid as data, one teacher pass for all cells, exact, resumable."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

import kdistill.sweep as sweep_module
from kdistill.cli import main
from kdistill.runs import RunSpec, execute
from kdistill.sweep import Sweep, run_sweep
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
    real_logits, real_execute = sweep_module._teacher_logits, sweep_module.execute
    monkeypatch.setattr(
        sweep_module, "_teacher_logits", lambda *a: passes.append(1) or real_logits(*a)
    )
    monkeypatch.setattr(
        sweep_module, "execute", lambda spec, out, **kw: executed.append(out.name) or real_execute(
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
