"""Logs and plots: ``--tensorboard`` (optional extra) and ``kdistill plot RUN [RUN ...]``."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from kdistill.cli import main
from kdistill.runs import read_history

COMMON = ["--model", "mlp:16", "--epochs", "3", "--batch-size", "256", "--device", "cpu",
          "--no-progress"]  # fmt: skip


def test_tensorboard_logs_every_epoch_and_survives_resume(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    out = tmp_path / "run"
    assert main(["train", *COMMON, "--out", str(out), "--tensorboard"]) == 0
    assert main(["train", *COMMON, "--out", str(out), "--tensorboard", "--resume"]) == 0
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train_loss", "test_errors", "lr"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("test_errors")]
    history = read_history(out / "history.csv")
    assert logged == [(int(r["epoch"]), r["test_errors"]) for r in history]  # once per epoch


def test_tensorboard_missing_is_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    status = main(["train", *COMMON, "--out", str(tmp_path / "r"), "--tensorboard"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "pip install 'kdistill[tensorboard]'" in err


def test_plot_draws_runs_side_by_side(tmp_path: Path, capsys) -> None:
    for name in ("alone", "distilled"):
        assert main(["train", *COMMON, "--out", str(tmp_path / name)]) == 0
    png = tmp_path / "cmp.png"
    assert (
        main(["plot", str(tmp_path / "alone"), str(tmp_path / "distilled"), "--out", str(png)]) == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curves of 2 run(s)" in capsys.readouterr().out

    status = main(["plot", str(tmp_path / "alone"), str(tmp_path / "nope"), "--out", str(png)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "nope is not a run folder" in err


def test_tensorboard_resumed_run_replaces_what_the_killed_one_logged(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    from kdistill.tblog import TensorBoardLog

    killed = TensorBoardLog(tmp_path)
    killed([{"epoch": 1, "train_loss": 1.0}])
    killed([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.9}])
    killed.close()  # epoch 2 logged, but killed before its checkpoint: resumed from epoch 1
    resumed = TensorBoardLog(tmp_path)
    resumed([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}])
    resumed([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5},
             {"epoch": 3, "train_loss": 0.25}])  # fmt: skip
    resumed.close()
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train_loss")] == [
        (1, 1.0), (2, 0.5), (3, 0.25)
    ]  # fmt: skip
