"""Resume: a real process killed by SIGKILL mid-epoch and resumed ends bitwise equal to an
unbroken run; corrupt or half-written checkpoints are caught, never loaded silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from kdistill.checkpoint import POINTER, atomic_write, load_checkpoint
from kdistill.cli import main
from kdistill.errors import KDistillError
from kdistill.train import TrainConfig, fit
from tests.helpers import make_split

REPO = Path(__file__).resolve().parent.parent
STEPS_PER_EPOCH = 11  # 1,297 digits in batches of 128


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KDISTILL_TEST_PAUSE_AT_STEP", None)
    path = [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(p for p in path if p), OMP_NUM_THREADS="1", **extra)
    return env


def _command(out: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "kdistill", *extra, "--dataset", "digits", "--epochs", "4",
        "--batch-size", "128", "--lr", "0.05", "--seed", "3", "--no-progress", "--device", "cpu",
        "--out", str(out),
    ]  # fmt: skip


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _kill_at_step(command: list[str], step: int, marker: Path) -> None:
    """Start ``command``, wait until training reaches ``step``, then SIGKILL it."""
    env = _env(KDISTILL_TEST_PAUSE_AT_STEP=str(step), KDISTILL_TEST_PAUSE_MARKER=str(marker))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the run never reached the pause step"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)  # never leave the paused process behind
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def _without_timings(folder: Path) -> tuple[list[str], dict]:
    history = (folder / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "seconds"]
    rows = [",".join(line.split(",")[i] for i in keep) for line in history]
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("train_seconds")
    for cost in [metrics["cost"]["model"], *metrics["cost"].get("teacher", [])]:
        cost.pop("inference_examples_per_s")
    return rows, metrics


@pytest.mark.parametrize(
    ("kind", "kill_step"),
    [("train", 2 * STEPS_PER_EPOCH + 4), ("distill", STEPS_PER_EPOCH + 1)],
)
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(
    tmp_path: Path, kind: str, kill_step: int
) -> None:
    extra = ["train", "--model", "pausing_models:pausing_mlp,hidden=24"]
    if kind == "distill":
        teacher = tmp_path / "teacher"
        _run(_command(teacher, ["train", "--model", "cnn:8,hidden=32"]), _env())
        extra = [
            "distill", "--model", "pausing_models:pausing_mlp,hidden=24",
            "--teacher", str(teacher), "-T", "4", "--alpha", "0.7",
        ]  # fmt: skip
    unbroken, resumed = tmp_path / "unbroken", tmp_path / "resumed"
    _run(_command(unbroken, extra), _env())

    _kill_at_step(_command(resumed, extra), kill_step, tmp_path / "paused")
    pointer = json.loads((resumed / POINTER).read_text())
    assert pointer["epoch"] == kill_step // STEPS_PER_EPOCH  # killed mid-epoch, after a save
    assert not (resumed / "metrics.json").exists()
    _run(_command(resumed, extra) + ["--resume"], _env())

    assert (resumed / "model.safetensors").read_bytes() == (
        unbroken / "model.safetensors"
    ).read_bytes()
    assert _without_timings(resumed) == _without_timings(unbroken)


def test_a_second_process_on_a_run_in_progress_is_refused(tmp_path: Path, capsys) -> None:
    """While a run trains, a resume of its folder by another process is refused with one line
    and writes nothing; once the first process is dead (SIGKILL), the resume goes ahead."""
    out, marker = tmp_path / "run", tmp_path / "paused"
    command = _command(out, ["train", "--model", "pausing_models:pausing_mlp,hidden=24"])
    step = STEPS_PER_EPOCH + 2  # after the first checkpoint
    env = _env(KDISTILL_TEST_PAUSE_AT_STEP=str(step), KDISTILL_TEST_PAUSE_MARKER=str(marker))
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert first.poll() is None, first.communicate()[1].decode()
            assert time.monotonic() < deadline, "the run never reached the pause step"
            time.sleep(0.05)
        before = {path.name: path.read_bytes() for path in out.iterdir()}
        assert main(command[3:] + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another process is writing a run into" in err
        assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    _run(command + ["--resume"], _env())
    assert (out / "metrics.json").is_file()
    assert len(json.loads((out / "meta.json").read_text())["invocations"]) == 2


def test_resume_without_checkpoint_is_one_line_error(tmp_path: Path, capsys) -> None:
    status = main(["train", "--model", "mlp:8", "--epochs", "1", "--resume", "--no-progress",
                   "--out", str(tmp_path / "nothing")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "no checkpoint to resume from" in err
    assert not (tmp_path / "nothing").exists()  # nothing written on the way to the error


def test_resume_needs_out(capsys) -> None:
    status = main(["train", "--model", "mlp:8", "--resume"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "--out" in err


class Killed(Exception):
    """Stands in for a kill right after a checkpoint was saved."""


def _fit(folder: Path, resume: bool = False, stop_after: int | None = None) -> nn.Module:
    """Three epochs of a small model, checkpointed; ``stop_after`` epochs then 'killed'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Dropout(0.3), nn.Linear(16, 4))
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, device="cpu")

    def on_epoch(history: list[dict]) -> None:
        if len(history) == stop_after:
            raise Killed

    try:
        fit(model, make_split(), config, checkpoint_dir=folder, resume=resume, progress=False,
            on_epoch=on_epoch)  # fmt: skip
    except Killed:
        pass
    return model


def _fit_two_epochs(folder: Path) -> None:
    _fit(folder, stop_after=2)


def _assert_equal_weights(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_truncated_checkpoint_is_detected(tmp_path: Path) -> None:
    _fit_two_epochs(tmp_path)
    name = json.loads((tmp_path / POINTER).read_text())["file"]
    payload = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(payload[: len(payload) // 2])  # half-written
    with pytest.raises(KDistillError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(KDistillError, match="corrupt checkpoint"):
        _fit(tmp_path, resume=True)


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    _fit_two_epochs(tmp_path)
    path = tmp_path / json.loads((tmp_path / POINTER).read_text())["file"]
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 3] ^= 0x01
    path.write_bytes(bytes(payload))
    with pytest.raises(KDistillError, match="sha256 does not match"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("pointer", ['{"file": "checkpoint-epoch0002.pt"', "{}", "[]", ""])
def test_corrupt_pointer_is_detected(tmp_path: Path, pointer: str) -> None:
    _fit_two_epochs(tmp_path)
    (tmp_path / POINTER).write_text(pointer)
    with pytest.raises(KDistillError, match="corrupt checkpoint pointer"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_file_is_detected(tmp_path: Path) -> None:
    _fit_two_epochs(tmp_path)
    (tmp_path / json.loads((tmp_path / POINTER).read_text())["file"]).unlink()
    with pytest.raises(KDistillError, match="is missing"):
        load_checkpoint(tmp_path)


def test_kill_between_file_and_pointer_resumes_from_previous_epoch(tmp_path: Path) -> None:
    """Epoch 3's file written but the pointer not yet moved: resume uses epoch 2, exactly."""
    _fit_two_epochs(tmp_path)
    atomic_write(tmp_path / "checkpoint-epoch0003.pt", b"whatever epoch 3 wrote")
    assert load_checkpoint(tmp_path)["epoch"] == 2
    _assert_equal_weights(_fit(tmp_path, resume=True), _fit(tmp_path / "unbroken"))
    assert load_checkpoint(tmp_path)["epoch"] == 3


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    _fit_two_epochs(tmp_path)
    junk = tmp_path / ".checkpoint-epoch0003.pt.abc123.tmp"
    junk.write_bytes(b"half a checkpoint")  # a kill during the write leaves this
    assert load_checkpoint(tmp_path)["epoch"] == 2
    _assert_equal_weights(_fit(tmp_path, resume=True), _fit(tmp_path / "unbroken"))
    assert load_checkpoint(tmp_path)["epoch"] == 3
    assert not junk.exists()


def test_a_resumed_run_counts_the_seconds_of_every_invocation(tmp_path: Path) -> None:
    """FitResult.seconds (a run's train_seconds) covers the epochs before the kill as well."""
    _fit_two_epochs(tmp_path)
    before = load_checkpoint(tmp_path)["seconds"]
    epoch_seconds = [row["seconds"] for row in load_checkpoint(tmp_path)["history"]]
    assert before >= sum(epoch_seconds) > 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Dropout(0.3), nn.Linear(16, 4))
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, device="cpu")
    result = fit(model, make_split(), config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert result.seconds >= before + result.history[2]["seconds"]
