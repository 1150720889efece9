"""Data-parallel runs on torchrun: sharding helpers, 2 ranks = 1 process, a killed rank.

The torchrun tests launch real 2-process jobs (gloo on 127.0.0.1) on the bundled digits, each
under a hard timeout, so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdistill import distributed
from kdistill.checkpoint import load_checkpoint, save_checkpoint
from kdistill.errors import KDistillError
from kdistill.runs import RunSpec, execute, read_history
from kdistill.train import TrainConfig, evaluate, fit

REPO = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT_S = 180  # a whole torchrun job; far above its ~10-30 s on a busy 2-core machine

# The tolerance of the 2-rank vs 1-process comparison. Each step's gradient is the same sum of
# per-example gradients, added in another order (per shard, then across ranks by the
# all-reduce); float32 rounding differences of ~1e-7 relative grow slowly over a few hundred
# SGD steps. Test errors and confusion matrices must match exactly.
WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-4


def test_shard_slice_cuts_like_tensor_split():
    for length in range(0, 23):
        for world in range(1, 6):
            rows = torch.arange(length)
            expected = rows.tensor_split(world)
            got = [rows[distributed.shard_slice(length, r, world)] for r in range(world)]
            assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_single_process_helpers_are_identities(tiny_split):
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    rows = torch.randn(5, 3)
    assert distributed.all_gather_rows(rows, 5) is rows
    assert distributed.all_reduce_sum(rows) is rows
    assert distributed.broadcast_from_main({"a": 1}) == {"a": 1}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.evaluate(model, tiny_split) == evaluate(model, tiny_split)


def test_process_group_outside_torchrun_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with distributed.process_group("cpu") as ctx:
        assert ctx == distributed.Context(0, 1, 0)
    assert not torch.distributed.is_initialized()


def test_commands_that_are_not_data_parallel_refuse_torchrun(monkeypatch, tmp_path):
    from kdistill.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(KDistillError, match="demo runs in one process"):
        distributed.refuse_torchrun("demo")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 2
    assert not (tmp_path / "demo").exists()


def test_rank_seeds_differ_by_rank_and_epoch():
    seeds = {distributed.rank_seed(0, epoch, rank) for epoch in range(3) for rank in range(4)}
    assert len(seeds) == 12
    assert distributed.rank_seed(7, 1, 1) == distributed.rank_seed(7, 1, 1)


def test_resume_refuses_a_checkpoint_of_another_world_size(tiny_split, tmp_path):
    config = TrainConfig(epochs=1, batch_size=32, device="cpu")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    fit(model, tiny_split, config, checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path)
    assert state["world_size"] == 1
    state["world_size"] = 2  # as if 2 torchrun processes had written it
    save_checkpoint(tmp_path, state, 1)
    with pytest.raises(KDistillError, match="made by 2 process"):
        fit(model, tiny_split, config, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_backend_follows_device():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda") == "nccl"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun_command(args: list[str], nproc: int = 2, program: str = "kdistill") -> list[str]:
    """torchrun running ``program``: a module (``-m``), or a script when it ends in ``.py``."""
    launch = [program] if program.endswith(".py") else ["-m", program]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--nnodes=1",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        *launch,
        *args,
    ]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    path = [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["KDISTILL_DIST_TIMEOUT"] = "60"  # no collective waits longer for a silent peer
    return {**env, **extra}


def _start(args: list[str], program: str = "kdistill", **env: str) -> subprocess.Popen:
    # its own session, so that a timeout can stop torchrun and every rank it started
    return subprocess.Popen(
        _torchrun_command(args, program=program),
        env=_env(**env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT_S) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun job did not finish in {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    spec = RunSpec(model="mlp:64", dataset="digits", train=TrainConfig(epochs=2, batch_size=32))
    execute(spec, out, progress=False)
    return out


def test_two_ranks_distil_like_one_process_with_the_global_batch(teacher_run, tmp_path):
    # 8 per rank x 2 ranks = 16: the digits transfer set (1,297) leaves a last global batch of
    # one example, so rank 1 also takes part in a step with an empty shard.
    common = ["distill", "--dataset", "digits", "--teacher", str(teacher_run), "--model", "mlp:32"]
    common += ["--epochs", "2", "-T", "4", "--lr", "0.05", "--no-progress"]
    single = tmp_path / "one"
    spec = RunSpec(
        model="mlp:32",
        dataset="digits",
        teachers=[str(teacher_run)],
        train=TrainConfig(epochs=2, batch_size=16, loss_args={"temperature": 4.0}, lr=0.05),
    )
    one = execute(spec, single, progress=False)

    double = tmp_path / "two"
    code, output = _finish(_start([*common, "--batch-size", "8", "--out", str(double)]))
    assert code == 0, output[-3000:]
    two = json.loads((double / "metrics.json").read_text())

    assert two["test"]["errors"] == one["test"]["errors"]
    assert two["test"]["confusion"] == one["test"]["confusion"]
    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], rel=LOSS_RTOL)
    w1, w2 = _weights(single), _weights(double)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=WEIGHT_ATOL, rtol=0)
    h1, h2 = read_history(single / "history.csv"), read_history(double / "history.csv")
    assert [r["test_errors"] for r in h2] == [r["test_errors"] for r in h1]
    for r1, r2 in zip(h1, h2, strict=True):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=LOSS_RTOL)
        assert r2["lr"] == r1["lr"]
    # only rank 0 wrote: one checkpoint file, and the config says what ran
    assert len(list(double.glob("checkpoint-epoch*.pt"))) == 1
    assert json.loads((double / "config.json").read_text())["train"]["batch_size"] == 8


def _rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The pid of the worker with ``RANK=rank`` among the descendants of ``torchrun_pid``."""
    pending = [torchrun_pid]
    while pending:
        pid = pending.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ:
            return pid
        pending += [int(child) for child in children]
    return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank through /proc")
def test_killed_rank_fails_the_job_and_resume_continues_from_rank_zero(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "paused"
    model = "pausing_models:pausing_mlp,hidden=64,dropout=0"
    args = ["train", "--dataset", "digits", "--model", model, "--epochs", "6"]
    args += ["--batch-size", "16", "--no-progress", "--out", str(out)]
    # Both ranks sleep at step 3 of epoch 2 (41 steps of 2 x 16 per epoch), after rank 0 saved
    # epoch 1, so the kill lands at a known moment however loaded the machine is.
    pause = {"KDISTILL_TEST_PAUSE_AT_STEP": "44", "KDISTILL_TEST_PAUSE_MARKER": str(marker)}
    proc = _start(args, **pause)
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not (marker.is_file() and (out / "checkpoint.json").is_file()):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the run never reached the pause step"
            time.sleep(0.05)
        victim = _rank_pid(proc.pid, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        code, output = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code != 0
    assert re.search(r"Root Cause[\s\S]*rank\s*:\s*1 \(local_rank: 1\)", output), output[-3000:]
    # (rank 0 usually also prints "lost contact with another rank", unless torchrun's SIGTERM
    # reaches it before its next all-reduce does: not asserted, it would be a race)
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    before = read_history(out / "history.csv")

    code, output = _finish(_start([*args, "--resume"]))
    assert code == 0, output[-3000:]
    after = read_history(out / "history.csv")
    assert [r["epoch"] for r in after] == list(range(1, 7))
    assert after[: len(before)] == before  # the epochs before the kill are kept, not re-run
    # continued exactly where rank 0 stopped: the same run in one process, uninterrupted
    spec = RunSpec(model=model, dataset="digits", train=TrainConfig(epochs=6, batch_size=32))
    one = execute(spec, tmp_path / "one", progress=False)
    assert json.loads((out / "metrics.json").read_text())["test"]["errors"] == one["test"]["errors"]
    for name, weight in _weights(tmp_path / "one").items():
        torch.testing.assert_close(_weights(out)[name], weight, atol=WEIGHT_ATOL, rtol=0)


def test_ddp_wrappers_are_freed_before_the_process_group_is_destroyed(tmp_path):
    # A DDP wrapper still alive after destroy_process_group is freed at interpreter exit, where
    # gloo's teardown could abort a rank that had finished its work ("terminate called without
    # an active exception", issue 11 item 10). See tests/ddp_teardown.py.
    code, output = _finish(_start([str(tmp_path)], program=str(REPO / "tests/ddp_teardown.py")))
    assert code == 0, output[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["wrappers"] == 3  # two fits and the cycle: DDP did wrap each model
        assert not report["alive_after_fit"]
        assert not report["alive_after_failed_fit"]
        assert report["alive_at_destroy"] == [False]
        assert report["threads"] == ["MainThread"]  # no tqdm monitor left running
