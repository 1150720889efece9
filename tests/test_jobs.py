"""`reproduce --jobs`: runs of a plan made side by side in worker processes end as they would one
at a time, a student waits for its teacher, and a failed run stops the others with its error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdistill.cli import main
from kdistill.errors import KDistillError
from kdistill.experiments.common import Plan, run_plan
from kdistill.experiments.jobs import ready_runs
from kdistill.runs import RunSpec
from kdistill.train import TrainConfig

FAST = {"epochs": 3, "batch_size": 64, "lr": 0.05}


def _plan(out: Path, student: dict | None = None) -> Plan:
    """A teacher, a student distilled from it, a student alone (on the bundled digits)."""
    plan = Plan(profile=None, seeds=1)
    plan.add("teacher", RunSpec(model="mlp:48", train=TrainConfig(**FAST)))
    distill = TrainConfig(**FAST, loss_args={"temperature": 4.0, "alpha": 0.7})
    plan.add(
        "distilled",
        RunSpec(model="mlp:16", teachers=[str(out / "teacher")], train=distill, **(student or {})),
    )
    plan.add("alone", RunSpec(model="mlp:16", train=TrainConfig(**FAST, seed=1)))
    return plan


def _made(out: Path, key: str) -> tuple[bytes, list[str]]:
    """A run's weights and its history without the timing column."""
    lines = (out / key / "history.csv").read_text().splitlines()
    seconds = lines[0].split(",").index("seconds")
    history = [",".join(v for i, v in enumerate(line.split(",")) if i != seconds) for line in lines]
    return (out / key / "model.safetensors").read_bytes(), history


def test_runs_made_two_at_a_time_equal_those_made_one_at_a_time(tmp_path: Path) -> None:
    assert torch.get_num_threads() == 1  # tests/conftest.py: so each job has one thread too
    one, two = tmp_path / "one", tmp_path / "two"
    run_plan(_plan(one), one, progress=False, log=lambda line: None, argv=["test"])
    lines: list[str] = []
    run_plan(_plan(two), two, progress=False, log=lines.append, argv=["test"], jobs=2)
    for key in ("teacher", "distilled", "alone"):
        assert _made(two, key) == _made(one, key)
    # the teacher and the student alone start together; the distilled one after the teacher
    assert lines[:2] == [
        "[1/3] teacher: started (1 thread(s))",
        "[3/3] alone: started (1 thread(s))",
    ]
    teacher_done = lines.index(
        next(line for line in lines if "teacher: " in line and "errors" in line)
    )
    assert lines.index("[2/3] distilled: started (1 thread(s))") > teacher_done > 1
    assert sum("test errors of 500" in line for line in lines) == 3
    # a second call finds every run done and starts none
    again: list[str] = []
    run_plan(_plan(two), two, progress=False, log=again.append, argv=["test"], jobs=2)
    assert len(again) == 3 and all(line.endswith("already done)") for line in again)


def test_a_failed_run_stops_the_others_with_its_error(tmp_path: Path) -> None:
    plan = _plan(tmp_path, student={"drop_classes": [42]})  # refused once the data are loaded
    with pytest.raises(KDistillError, match="--drop-classes 42: no such class"):
        run_plan(plan, tmp_path, progress=False, log=lambda line: None, argv=["test"], jobs=2)
    assert not (tmp_path / "distilled").exists()


def test_jobs_below_one_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    assert main(["reproduce", "hinton2015", "--jobs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs must be >= 1, got 0" in err
    assert not out.exists()


def test_a_script_without_a_main_guard_gets_an_error_not_a_hang(tmp_path: Path) -> None:
    """Spawned workers import the calling script again; unguarded, they die at start, and the
    call ends with a one-line error instead of respawning them forever."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pathlib import Path\n"
        "from kdistill.experiments.common import run_plan\n"
        "from tests.test_jobs import _plan\n"
        f"out = Path({str(tmp_path / 'out')!r})\n"
        "run_plan(_plan(out), out, progress=False, log=print, argv=['t'], jobs=2)\n"
    )
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "KDistillError: a worker process of --jobs died" in done.stderr


def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed `reproduce --jobs` runs no clean-up: its workers must not train on, orphaned,
    holding their runs' folder locks; each run keeps its checkpoint for the next call."""
    marker = tmp_path / "paused"
    script = tmp_path / "guarded.py"
    script.write_text(
        "from pathlib import Path\n"
        "from kdistill.experiments.common import Plan, run_plan\n"
        "from kdistill.runs import RunSpec\n"
        "from kdistill.train import TrainConfig\n"
        'if __name__ == "__main__":\n'
        "    plan = Plan(profile=None, seeds=1)\n"
        "    train = TrainConfig(epochs=2, batch_size=64)\n"
        "    plan.add('paused', RunSpec(model='pausing_models:pausing_mlp', train=train))\n"
        f"    out = Path({str(tmp_path / 'out')!r})\n"
        "    run_plan(plan, out, progress=False, log=print, argv=['t'], jobs=2)\n"
    )
    repo = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "tests")]),
        "KDISTILL_TEST_PAUSE_AT_STEP": "30",  # in the second epoch: after a checkpoint
        "KDISTILL_TEST_PAUSE_MARKER": str(marker),
    }
    parent = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the worker is asleep inside a training step
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        children = _children(parent.pid)  # the workers and multiprocessing's resource tracker
        assert children
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children)
    finally:
        parent.kill()
    assert (tmp_path / "out" / "paused" / "checkpoint.json").exists()  # it resumes from there


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state, parent, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def test_ready_runs_start_in_plan_order_once_their_teachers_are_finished() -> None:
    teachers = {"teacher": set(), "distilled": {"teacher"}, "alone": set(), "b": set()}
    order = ["teacher", "distilled", "alone", "b"]
    # the student waits for its teacher; the free job takes the next run with none
    assert ready_runs(order, [], teachers, jobs=2) == ["teacher", "alone"]
    assert ready_runs(["distilled", "b"], ["teacher"], teachers, jobs=2) == ["b"]
    assert ready_runs(["distilled", "b"], ["teacher"], teachers, jobs=1) == []
    assert ready_runs(["distilled", "b"], [], teachers, jobs=3) == ["distilled", "b"]
