"""The command line end to end: run folders, evaluate with bias shifts, one-line errors, demo."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kdistill.cli import main
from kdistill.data import load_dataset
from kdistill.runs import RunSpec, load_run_model, transfer_split, weights_sha256
from kdistill.train import evaluate

FAST = ["--epochs", "2", "--no-progress", "--batch-size", "64"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    assert main(["train", "--model", "mlp:64", "--out", str(out), "--lr", "0.05", *FAST]) == 0
    return out


def test_train_writes_a_traceable_run_folder(teacher_run):
    names = {p.name for p in teacher_run.iterdir()}
    assert {"config.json", "meta.json", "history.csv", "metrics.json", "model.safetensors"} <= names
    assert not any(name.endswith(".tmp") for name in names)
    config = json.loads((teacher_run / "config.json").read_text())
    assert config["model"] == "mlp:64" and config["train"]["epochs"] == 2
    assert config["train"]["seed"] == 0 and config["dataset"] == "digits"
    meta = json.loads((teacher_run / "meta.json").read_text())
    assert {"seed", "torch", "python", "git_commit", "argv", "kdistill"} <= set(meta)
    rows = list(csv.DictReader(open(teacher_run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    assert metrics["test"]["examples"] == 500
    assert len(metrics["test"]["confusion"]) == 10
    assert {"parameters", "flops_per_example", "inference_examples_per_s"} <= set(
        metrics["cost"]["model"]
    )
    # The saved weights are the model that was scored.
    model, _ = load_run_model(teacher_run)
    assert set(load_file(teacher_run / "model.safetensors")) == set(model.state_dict())
    assert evaluate(model, load_dataset("digits").test)["errors"] == metrics["test"]["errors"]


def test_train_on_part_of_the_training_set(tmp_path, capsys):
    """`train --fraction/--drop-classes`: a hard-label baseline on the student's own data."""
    out = tmp_path / "small"
    argv = ["train", "--model", "mlp:16", "--fraction", "0.3", "--drop-classes", "3"]
    assert main([*argv, "--out", str(out), *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["train_fraction"], config["drop_classes"]) == (0.3, [3])
    spec = RunSpec(model="mlp:16", train_fraction=0.3, drop_classes=[3])
    train = load_dataset("digits").train
    expected = transfer_split(train, spec)
    assert 3 not in expected.labels.tolist()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["transfer_set_size"] == len(expected) < 0.3 * len(train)
    refused = tmp_path / "refused"
    _one_line_error(capsys, ["train", "--fraction", "1.5", "--out", str(refused)], "--fraction")
    assert not refused.exists()


def test_distill_and_evaluate_with_bias_shift(teacher_run, tmp_path, capsys):
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher_run), "--model", "mlp:16", "--out", str(out)]
    assert main([*args, "-T", "4", "--alpha", "0.5", "--drop-classes", "3", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    digits = load_dataset("digits")
    assert metrics["transfer_set_size"] == int((digits.train.labels != 3).sum())
    assert metrics["cost"]["teacher"][0]["parameters"] == 64 * 64 + 64 + 64 * 10 + 10
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "distill" and config["drop_classes"] == [3]
    assert config["train"]["loss"] == "hinton"
    assert config["train"]["loss_args"] == {"temperature": 4.0, "alpha": 0.5}
    capsys.readouterr()

    assert main(["evaluate", str(out)]) == 0
    plain = capsys.readouterr().out
    assert main(["evaluate", str(out), "--bias-shift", "3=50"]) == 0
    shifted = capsys.readouterr().out
    assert "3+50" in shifted and "none" in plain
    # A huge bias on class 3 makes the model predict 3 for everything: every non-3 is wrong.
    errors_row = next(line for line in shifted.splitlines() if "3+50" in line)
    non_threes = int((digits.test.labels != 3).sum())
    assert int(errors_row.split("|")[3]) == non_threes


def test_ensemble_distillation_from_two_teacher_runs(teacher_run, tmp_path):
    second = tmp_path / "teacher2"
    assert main(["train", "--model", "mlp:32", "--seed", "1", "--out", str(second), *FAST]) == 0
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher_run), "--teacher", str(second)]
    assert main([*args, "--model", "mlp:16", "--out", str(out), *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["teacher_sha256"] == [weights_sha256(teacher_run), weights_sha256(second)]
    teachers = json.loads((out / "metrics.json").read_text())["cost"]["teacher"]
    assert [t["parameters"] for t in teachers] == [4810, 2410]  # mlp:64, mlp:32 on 8x8 digits
    one = tmp_path / "from-one"  # the second member changes what the student learns
    args = ["distill", "--teacher", str(teacher_run), "--model", "mlp:16", "--out", str(one)]
    assert main([*args, *FAST]) == 0
    losses = [
        [row.split(",")[2] for row in (run / "history.csv").read_text().splitlines()[1:]]
        for run in (out, one)
    ]
    assert losses[0] != losses[1]


def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("kdistill: error: ")
    assert message in err[0], err[0]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["-T", "0"], "temperature must be a finite number > 0"),
        (["-T", "-2"], "temperature must be a finite number > 0"),
        (["--alpha", "1.5"], "alpha (the weight of the soft-target term) must be in [0, 1]"),
        (["--model", "tests.helpers:five_way_mlp"], "teacher has 10 classes but student has 5"),
        (["--model", "rnn:12"], "unknown model kind 'rnn'"),
        (["--fraction", "0"], "--fraction must be in (0, 1]"),
        (["--loss", "hintn"], "unknown loss 'hintn': choose one of"),
        (["--loss-arg", "temprature=4"], "takes no argument 'temprature'; its arguments are"),
        (["--loss-arg", "temperature"], "--loss-arg takes KEY=VALUE"),
        (["-T", "4", "--loss-arg", "temperature=5"], "--temperature and --loss-arg temperature"),
        (["--loss", "cross-entropy", "-T", "4"], "'cross-entropy' takes no argument"),
        (["--keep-classes", "11"], "--keep-classes 11: no such class; the digits classes are 0"),
        (["--drop-classes", "3,11"], "--drop-classes 11: no such class"),
        (["--drop-classes", "3", "--keep-classes", "7"], "exclude each other"),
    ],
)
def test_distill_errors_are_one_line(teacher_run, tmp_path, capsys, extra, message):
    argv = ["distill", "--teacher", str(teacher_run), "--out", str(tmp_path / "s"), *FAST]
    _one_line_error(capsys, [*argv, "--model", "mlp:16", *extra], message)


def test_more_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "x")
    _one_line_error(
        capsys,
        ["distill", "--teacher", str(tmp_path / "nope"), "--out", out],
        "does not exist or has not finished",
    )
    _one_line_error(
        capsys, ["train", "--dataset", "cifar", "--out", out], "unknown dataset 'cifar'"
    )
    _one_line_error(
        capsys,
        ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", out],
        "missing data file",
    )
    _one_line_error(
        capsys,
        ["train", "--model", "mlp:8", "--lr", "1e30", "--out", out, *FAST],
        "loss became non-finite at epoch 1, step",
    )
    _one_line_error(
        capsys,
        ["train", "--resume", "--out", str(tmp_path / "fresh"), *FAST],
        "no checkpoint to resume from",
    )
    _one_line_error(capsys, ["evaluate", str(tmp_path / "nope")], "is not a finished kdistill run")
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: one line as well
        main(["distill", "--model", "mlp:8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one of the arguments --teacher --teacher-logits is required" in err[0]


def test_demo_distilled_student_beats_student_alone(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    table = capsys.readouterr().out
    errors = {}
    for label in ("teacher", "student alone", "student distilled"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {label}"))
        errors[label] = int(row.split("|")[3])
    assert errors["student distilled"] < errors["student alone"]
    assert errors["teacher"] < errors["student alone"]
    for png in ("curves.png", "soft_targets.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # run again: every run is finished, checked and kept; another seed is refused, not mixed in
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "training " not in again
    for label, value in errors.items():
        row = next(line for line in again.splitlines() if line.startswith(f"| {label}"))
        assert int(row.split("|")[3]) == value
    assert main(["demo", "--out", str(tmp_path), "--seed", "1", "--no-progress"]) == 2
    assert "holds a run with other settings (train.seed: 0 -> 1)" in capsys.readouterr().err


def test_loss_and_loss_args_are_the_long_form_of_t_and_alpha(teacher_run, tmp_path):
    """`--loss hinton --loss-arg temperature=4 --loss-arg alpha=0.5` is `-T 4 --alpha 0.5`."""
    base = ["distill", "--teacher", str(teacher_run), "--model", "mlp:16", *FAST]
    long, short = tmp_path / "long", tmp_path / "short"
    assert main([*base, "--out", str(long), "--loss", "hinton", "--loss-arg", "temperature=4",
                 "--loss-arg", "alpha=0.5"]) == 0  # fmt: skip
    assert main([*base, "--out", str(short), "-T", "4", "--alpha", "0.5"]) == 0
    configs = [json.loads((f / "config.json").read_text()) for f in (long, short)]
    assert configs[0] == configs[1]
    assert configs[0]["train"]["loss_args"] == {"temperature": 4.0, "alpha": 0.5}
    weights = [load_file(f / "model.safetensors") for f in (long, short)]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    # the defaults of `kdistill distill`: T = 20, soft targets only
    default = tmp_path / "default"
    assert main([*base, "--out", str(default), "--epochs", "1"]) == 0
    train = json.loads((default / "config.json").read_text())["train"]
    assert (train["loss"], train["loss_args"]) == ("hinton", {"temperature": 20.0, "alpha": 1.0})
    header = (default / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,lr,train_loss,train_soft,seconds")


def _fresh_python(code: str) -> None:
    """Run ``code`` in a new interpreter (modules imported by this one do not count)."""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_a_run_that_plots_nothing_never_imports_matplotlib() -> None:
    # matplotlib costs about a second of a short run's fixed cost (issue 15)
    _fresh_python(
        "import sys, kdistill.cli, kdistill.reports, kdistill.runs, kdistill.sweep\n"
        "import kdistill.experiments.hinton2015, kdistill.experiments.logit_losses\n"
        "assert 'matplotlib' not in sys.modules, 'imported matplotlib'\n"
        "kdistill.reports.pyplot()\n"
        "assert sys.modules['matplotlib'].get_backend().lower() == 'agg'\n"
    )


def test_the_optimizers_imports_start_early_in_a_thread_and_finish() -> None:
    _fresh_python(
        "import sys, threading\n"
        "from kdistill.train import OPTIMIZER_IMPORTS, start_optimizer_imports\n"
        "assert not any(name in sys.modules for name in OPTIMIZER_IMPORTS)\n"
        "started, start = [], threading.Thread.start\n"
        "threading.Thread.start = lambda self: (started.append(self), start(self))\n"
        "start_optimizer_imports(); start_optimizer_imports()  # the second call does nothing\n"
        "assert [t.name for t in started] == ['kdistill-imports'], started\n"
        "started[0].join()\n"
        "assert all(name in sys.modules for name in OPTIMIZER_IMPORTS)\n"
    )
