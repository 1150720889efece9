"""Nothing a user does corrupts a run, runs code they did not ask for, or succeeds silently when
wrong (issue 11): refused commands write nothing, run folders are data, teachers are checked,
errors are one line with advice that works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdistill
import kdistill.runs as runs_module
from kdistill.checkpoint import POINTER
from kdistill.cli import main
from kdistill.data import load_dataset, train_val_split
from kdistill.errors import KDistillError
from kdistill.runs import load_run_model
from kdistill.sweep import summarize
from kdistill.train import TrainConfig, fit
from tests.helpers import ExplodesLater, make_split

REPO = Path(__file__).resolve().parent.parent
FAST = ["--epochs", "1", "--no-progress", "--batch-size", "128", "--lr", "0.05"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", "--model", "mlp:16", "--out", str(out), *FAST]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _error(capsys, argv: list[str], message: str) -> str:
    status = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("kdistill: error: "), err
    assert message in err[0], err[0]
    return err[0]


def _interrupt_after(monkeypatch, epochs: int) -> None:
    """Make the next run stop as if Ctrl-C was pressed right after ``epochs`` epochs."""
    real_fit = runs_module.fit

    def fit_then_interrupt(*args, on_epoch=None, **kwargs):
        def hook(history):
            if on_epoch is not None:
                on_epoch(history)
            if len(history) == epochs:
                raise KeyboardInterrupt

        return real_fit(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(runs_module, "fit", fit_then_interrupt)


# --------------------------------------------------------------------------- 1. refused commands


def test_refused_command_leaves_the_finished_run_as_it_was(teacher, capsys):
    before = _snapshot(teacher)
    _error(
        capsys,
        ["train", "--model", "mlp:32", "--out", str(teacher), *FAST],
        "already holds a checkpoint",
    )
    _error(
        capsys,
        ["distill", "--teacher", str(teacher), "--model", "mlp:8", "--out", str(teacher), *FAST],
        "already holds a checkpoint",
    )
    assert _snapshot(teacher) == before
    assert main(["evaluate", str(teacher)]) == 0  # still loads


def test_resume_with_other_settings_writes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupt_after(monkeypatch, 1)
    assert main(["train", "--model", "mlp:8", "--out", str(out), *FAST, "--epochs", "2"]) == 130
    capsys.readouterr()
    before = _snapshot(out)
    _error(
        capsys,
        ["train", "--model", "mlp:8", "--out", str(out), *FAST, "--epochs", "3", "--resume"],
        "holds a run with other settings (train.epochs: 2 -> 3)",
    )
    assert _snapshot(out) == before


# ------------------------------------------------------------------------ 2. run folders are data


def test_loading_a_run_never_runs_the_code_it_names(teacher, tmp_path, monkeypatch, capsys):
    run = tmp_path / "own-model"
    assert main(["train", "--model", "tests.helpers:recording_mlp", "--out", str(run), *FAST]) == 0
    marker = tmp_path / "called"
    monkeypatch.setenv("KDISTILL_TEST_CALLED", str(marker))

    _error(capsys, ["evaluate", str(run)], "pass --trust-code")
    student = tmp_path / "student"
    distill = ["distill", "--teacher", str(run), "--model", "mlp:8", "--out", str(student), *FAST]
    _error(capsys, distill, "pass --trust-code")
    sweep = ["sweep", "--teacher", str(run), "--model", "mlp:8", "-T", "2", "--alpha", "1"]
    _error(capsys, [*sweep, "--out", str(tmp_path / "sweep"), *FAST], "pass --trust-code")
    with pytest.raises(KDistillError, match="trust_code=True"):
        load_run_model(run)
    assert not marker.exists() and not student.exists() and not (tmp_path / "sweep").exists()

    assert main(["evaluate", str(run), "--trust-code"]) == 0  # the user says so explicitly
    assert marker.exists()
    assert main([*distill, "--trust-code"]) == 0
    load_run_model(run, trust_code=True)

    # A folder naming a standard-library function is refused before it runs anything.
    hostile = tmp_path / "hostile"
    shutil.copytree(teacher, hostile)
    config = json.loads((hostile / "config.json").read_text())
    pwned = tmp_path / "pwned"
    config["model"] = f"os:system,command=touch {pwned}"
    (hostile / "config.json").write_text(json.dumps(config))
    _error(capsys, ["evaluate", str(hostile)], "which loading would import and run as code")
    _error(
        capsys,
        ["distill", "--teacher", str(hostile), "--out", str(tmp_path / "s2"), *FAST],
        "--trust-code",
    )
    assert not pwned.exists()


def test_a_spec_returning_no_module_is_refused_before_anything_is_written(
    teacher, tmp_path, capsys
):
    out = tmp_path / "sweep"
    sweep = ["sweep", "--teacher", str(teacher), "-T", "2", "--alpha", "1", "--out", str(out)]
    _error(capsys, [*sweep, "--model", "tests.helpers:not_a_module", *FAST], "not an nn.Module")
    assert not out.exists()
    _error(
        capsys,
        ["train", "--model", "tests.helpers:not_a_module", "--out", str(out), *FAST],
        "not an nn.Module",
    )
    assert not out.exists()


def test_readme_states_what_loading_a_run_trusts():
    readme = (REPO / "README.md").read_text()
    assert "--trust-code" in readme and "never imports" in readme


# --------------------------------------------------------------------------- 3. teacher's dataset


def test_teacher_from_another_dataset_is_refused(shared_data, tmp_path, capsys):
    mnist_teacher = tmp_path / "mnist-teacher"
    common = ["--data-dir", str(shared_data), "--batch-size", "512", "--no-progress"]
    train = ["train", "--dataset", "mnist", "--model", "mlp:8", "--epochs", "1", *common]
    assert main([*train, "--out", str(mnist_teacher)]) == 0
    student = tmp_path / "student"
    distill = ["distill", "--teacher", str(mnist_teacher), "--model", "mlp:8", "--epochs", "1"]
    _error(
        capsys,
        [*distill, *common, "--dataset", "fashion-mnist", "--out", str(student)],
        f"the teacher {mnist_teacher} was trained on mnist, not fashion-mnist",
    )
    assert not student.exists()
    # Without --dataset, distill takes the teacher's.
    assert main([*distill, *common, "--out", str(student)]) == 0
    assert json.loads((student / "config.json").read_text())["dataset"] == "mnist"


def test_teacher_of_other_input_shape_is_refused(teacher, shared_data, tmp_path, capsys):
    _error(
        capsys,
        ["distill", "--teacher", str(teacher), "--dataset", "mnist", "--data-dir",
         str(shared_data), "--out", str(tmp_path / "s"), *FAST],
        "was trained on digits, not mnist",
    )  # fmt: skip
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- 4. teacher checksums


def test_resume_refuses_a_changed_teacher(teacher, tmp_path, monkeypatch, capsys):
    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    other = tmp_path / "other"
    assert main(["train", "--model", "mlp:16", "--seed", "1", "--out", str(other), *FAST]) == 0
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(mine), "--model", "mlp:8", "--out", str(out), *FAST]
    argv += ["--epochs", "2"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    monkeypatch.undo()
    capsys.readouterr()
    recorded = json.loads((out / "config.json").read_text())["teacher_sha256"]
    assert recorded == [runs_module.weights_sha256(teacher)]

    original = (mine / "model.safetensors").read_bytes()
    shutil.copy(other / "model.safetensors", mine / "model.safetensors")  # same architecture
    before = _snapshot(out)
    _error(capsys, [*argv, "--resume"], f"the teacher {mine} has changed since")
    assert _snapshot(out) == before

    (mine / "model.safetensors").write_bytes(original)
    assert main([*argv, "--resume"]) == 0


def test_run_from_before_teacher_checksums_still_resumes(teacher, tmp_path, monkeypatch):
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(teacher), "--model", "mlp:8", "--out", str(out), *FAST]
    argv += ["--epochs", "2"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    monkeypatch.undo()
    # As written by kdistill before this change: no teacher_sha256, meta.json one object.
    config = json.loads((out / "config.json").read_text())
    del config["teacher_sha256"]
    (out / "config.json").write_text(json.dumps(config))
    meta = json.loads((out / "meta.json").read_text())
    old_meta = {k: v for k, v in meta.items() if k != "invocations"}
    (out / "meta.json").write_text(json.dumps(old_meta))
    assert main([*argv, "--resume"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["time"] == old_meta["time"] and len(meta["invocations"]) == 2


def test_docs_results_runs_still_load():
    runs = sorted((REPO / "docs" / "results").glob("**/config.json"))
    assert runs
    for config in runs[:3]:
        saved = json.loads(config.read_text())
        spec = runs_module.RunSpec.from_dict(
            {k: v for k, v in saved.items() if k in runs_module.RunSpec.__dataclass_fields__}
        )
        assert runs_module.run_difference(saved, spec) == []


# --------------------------------------------------------------------------- 5. one-line errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_absent_or_unknown_device_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    _error(capsys, ["train", "--device", "cuda", "--out", str(out), *FAST], "not available")
    _error(capsys, ["train", "--device", "tpu", "--out", str(out), *FAST], "unknown device 'tpu'")
    assert not out.exists()


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(teacher, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    _error(capsys, ["train", "--out", str(a_file), *FAST], "is a file, not a folder")
    _error(capsys, ["demo", "--out", str(a_file), "--no-progress"], "is a file, not a folder")
    sweep = ["sweep", "--teacher", str(teacher), "--model", "mlp:8", "-T", "2", "--alpha", "1"]
    _error(capsys, [*sweep, "--out", str(a_file), *FAST], "is a file, not a folder")
    _error(capsys, ["train", "--out", str(a_file / "sub"), *FAST], "is a file, not a folder")
    assert a_file.read_text() == "mine"
    if Path("/proc/self").is_dir():
        _error(capsys, ["train", "--out", "/proc/kd", *FAST], "cannot create the folder /proc/kd")


def test_broken_pipe_is_one_line(teacher):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "kdistill", "evaluate", str(teacher)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # like `| head` that has stopped reading
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 2
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("kdistill: error: the output was cut short")


def test_weights_that_do_not_fit_the_config_is_one_line(teacher, tmp_path, capsys):
    run = tmp_path / "edited"
    shutil.copytree(teacher, run)
    config = json.loads((run / "config.json").read_text())
    config["model"] = "mlp:32"
    (run / "config.json").write_text(json.dumps(config))
    _error(capsys, ["evaluate", str(run)], "do not fit the model 'mlp:32' of its config.json")


# --------------------------------------------------------------------------- 6. Ctrl-C advice


def test_interrupted_commands_give_advice_that_works(teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "mlp:8", "--out", str(out), *FAST, "--epochs", "2"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    assert "re-run the same command with --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0

    sweep = tmp_path / "sweep"
    argv = ["sweep", "--teacher", str(teacher), "--model", "mlp:8", "-T", "2,4", "--alpha", "1"]
    argv += ["--out", str(sweep), *FAST, "--epochs", "2"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    advice = capsys.readouterr().err
    assert "--resume" not in advice and "re-run the same command" in advice
    monkeypatch.undo()
    assert main(argv) == 0  # the advice works
    assert "(resuming)" in capsys.readouterr().out

    import kdistill.experiments.common as reproductions

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproductions, "reproduce", interrupted)
    assert main(["reproduce", "hinton2015", "--out", str(tmp_path / "rep")]) == 130
    advice = capsys.readouterr().err
    assert "--resume" not in advice and "re-run the same command" in advice


def test_interrupted_run_without_out_names_the_folder_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_fit = runs_module.fit
    _interrupt_after(monkeypatch, 1)
    assert main(["train", "--model", "mlp:8", *FAST, "--epochs", "2"]) == 130
    (folder,) = (tmp_path / "runs").iterdir()
    assert f"with --out runs/{folder.name} --resume" in capsys.readouterr().err
    monkeypatch.setattr(runs_module, "fit", real_fit)
    argv = ["train", "--model", "mlp:8", *FAST, "--epochs", "2", "--out", f"runs/{folder.name}"]
    assert main([*argv, "--resume"]) == 0


def test_interrupted_first_epoch_leaves_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_fit = runs_module.fit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs_module, "fit", interrupted)
    assert main(["train", "--model", "mlp:8", "--out", str(out), *FAST]) == 130
    assert "re-run the same command" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setattr(runs_module, "fit", real_fit)


# --------------------------------------------------------------------------- 7. wrong data folder


def test_valid_files_of_another_dataset_are_named(shared_data, tmp_path, capsys):
    _error(
        capsys,
        ["train", "--dataset", "fashion-mnist", "--data-dir", str(shared_data / "mnist"),
         "--out", str(tmp_path / "r"), *FAST],
        "is the mnist train images file (valid), not the file expected here",
    )  # fmt: skip
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- 8. wrong settings


def test_diverged_run_stops_with_advice_and_leaves_no_stub(tmp_path, capsys):
    out = tmp_path / "r"
    message = _error(
        capsys,
        ["train", "--model", "mlp:16", "--out", str(out), *FAST, "--epochs", "3", "--lr", "1e6"],
        "--lr",
    )
    assert "--grad-clip" in message and ("diverged" in message or "non-finite" in message)
    assert not out.exists()


def test_loss_that_explodes_later_stops_keeping_the_last_good_checkpoint(tmp_path):
    split = make_split()
    model = ExplodesLater(36, 4, after=4)  # 256 examples in batches of 64: 4 steps per epoch
    config = TrainConfig(epochs=3, batch_size=64, lr=0.01, device="cpu")
    with pytest.raises(KDistillError, match="diverged.*epoch 2.*checkpoint of epoch 1"):
        fit(model, split, config, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / POINTER).read_text())["epoch"] == 1


# --------------------------------------------------------------------------- 9. run records


def test_failed_run_leaves_no_stub_folder(tmp_path, capsys):
    out = tmp_path / "r"
    _error(
        capsys,
        ["train", "--model", "tests.helpers:five_way_mlp", "--out", str(out), *FAST],
        "label",
    )
    assert not out.exists()


def test_resume_keeps_every_invocation(tmp_path, monkeypatch):
    out = tmp_path / "r"
    argv = ["train", "--model", "mlp:8", "--out", str(out), *FAST, "--epochs", "2"]
    _interrupt_after(monkeypatch, 1)
    assert main(argv) == 130
    first = json.loads((out / "meta.json").read_text())
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [m["argv"][-1] for m in meta["invocations"]] == ["2", "--resume"]
    assert meta["argv"] == first["argv"] and meta["time"] == first["time"]
    assert meta["git_commit"] == first["git_commit"]


def test_output_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["train", "--model", "mlp:8", "--out", str(tmp_path / "r"), *FAST]) == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "r").iterdir():
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_transfer_set_size_excludes_the_validation_split(tmp_path):
    out = tmp_path / "r"
    argv = ["train", "--model", "mlp:8", "--out", str(out), *FAST, "--val-fraction", "0.2"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    train, val = train_val_split(load_dataset("digits").train, 0.2, 0)
    assert metrics["transfer_set_size"] == len(train) and metrics["val"]["examples"] == len(val)


def test_history_lr_is_the_rate_used_during_the_epoch(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--model", "mlp:8", "--out", str(out), *FAST, "--epochs", "2"]) == 0
    rows = (out / "history.csv").read_text().splitlines()
    lr = rows[0].split(",").index("lr")
    assert [float(r.split(",")[lr]) for r in rows[1:]] == [0.05, pytest.approx(0.025, rel=0.02)]


# --------------------------------------------------------------------------- 15. bias shifts


def test_evaluate_prints_before_and_after_and_chooses_a_shift(teacher, tmp_path, capsys):
    out = tmp_path / "no3s"
    argv = ["distill", "--teacher", str(teacher), "--model", "mlp:16", "--out", str(out), *FAST]
    argv += ["--drop-classes", "3", "--holdout-fraction", "0.2", "--epochs", "2", "-T", "4"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--bias-shift", "3=3.5"]) == 0
    table = capsys.readouterr().out
    assert "| none " in table and "| 3+3.5 " in table and "errors_after_shift" in table

    assert main(["evaluate", str(out), "--bias-shift", "3=auto"]) == 0
    table = capsys.readouterr().out
    held = len(train_val_split(load_dataset("digits").train, 0.2, 0)[1])
    assert f"(auto: chosen on {held} held-out examples)" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "none" in line]
    assert len(rows) == 1

    _error(
        capsys,
        ["evaluate", str(teacher), "--bias-shift", "3=auto"],
        "distill with --holdout-fraction",
    )


# --------------------------------------------------------------------------- 16. data folder


def test_config_records_the_data_folder_from_the_environment(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("KDISTILL_DATA", str(shared_data))
    out = tmp_path / "r"
    argv = ["train", "--dataset", "mnist", "--model", "mlp:8", "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--batch-size", "512", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data_dir"] == str(shared_data.resolve())
    monkeypatch.delenv("KDISTILL_DATA")  # another shell
    monkeypatch.setenv("HOME", str(tmp_path))  # and no cached copy either
    runs_module.cached_dataset.cache_clear()
    assert main(["evaluate", str(out)]) == 0


# --------------------------------------------------------------------------- 17. --help, --version


def test_help_shows_defaults_and_there_is_a_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("epochs", "10"), ("seed", "0"), ("lr", "0.1"), ("batch-size", "128"),
        ("momentum", "0.9"), ("weight-decay", "0.0"), ("optimizer", "sgd"),
        ("schedule", "cosine"),
    ]:  # fmt: skip
        after = text[text.index(f"--{option} ", text.index("options:")) :]
        assert f"default {default})" in after[:300], (option, after[:300])
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kdistill {kdistill.__version__}"


# --------------------------------------------------------------------------- 19. sweep ranking


def test_sweep_ranks_by_validation_errors_when_held_out(teacher, tmp_path, capsys):
    rows = [
        {"temperature": 1.0, "alpha": 1.0, "test_errors": 10, "val_errors": 30},
        {"temperature": 4.0, "alpha": 1.0, "test_errors": 20, "val_errors": 5},
    ]
    assert [r["T"] for r in summarize(rows)] == [4.0, 1.0]
    assert [r["T"] for r in summarize([{**r, "val_errors": None} for r in rows])] == [1.0, 4.0]

    out = tmp_path / "sweep"
    argv = ["sweep", "--teacher", str(teacher), "--model", "mlp:8", "-T", "2,4", "--alpha", "1"]
    assert main([*argv, "--out", str(out), *FAST, "--val-fraction", "0.2"]) == 0
    assert "mean_val_errors" in capsys.readouterr().out
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert "val_errors" in header
