"""Input standardisation (`--inputs`): the dataset's pixel statistics, written into the model spec
that config.json records; raw inputs by default; a run continues with the inputs it began with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdistill.cli import main
from kdistill.data import Dataset, load_dataset, pixel_statistics
from kdistill.errors import KDistillError
from kdistill.models import build_model, with_input_scaling
from kdistill.runs import load_run_model

FAST = ["--epochs", "1", "--no-progress", "--batch-size", "256"]


def _direct_statistics(images: torch.Tensor) -> tuple[float, float]:
    std, mean = torch.std_mean(images.double(), correction=0)
    return float(mean), float(std)


def _digits_spec(spec: str) -> str:
    """``spec`` with the digits' statistics, computed here directly and rounded to 4 decimals."""
    mean, std = _direct_statistics(load_dataset("digits").train.images)
    return f"{spec},input_mean={round(mean, 4)},input_std={round(std, 4)}"


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_pixel_statistics_equal_a_direct_computation(tiny_split) -> None:
    expected = _direct_statistics(tiny_split.images)
    assert pixel_statistics(tiny_split.images, chunk=100) == pytest.approx(expected, abs=1e-7)
    dataset = Dataset("tiny", tiny_split, tiny_split, ("a", "b", "c", "d"))
    assert dataset.pixel_statistics == pytest.approx(expected, abs=1e-7)
    assert dataset.pixel_statistics is dataset.pixel_statistics  # computed once, cached


def test_mnist_statistics_are_the_tutorials_numbers(shared_data) -> None:
    mean, std = load_dataset("mnist", shared_data).pixel_statistics
    assert (round(mean, 4), round(std, 4)) == (0.1307, 0.3081)


def test_with_input_scaling_rounds_and_leaves_set_or_user_specs_alone() -> None:
    assert with_input_scaling("mlp:800x800", 0.130660, 0.308108) == (
        "mlp:800x800,input_mean=0.1307,input_std=0.3081"
    )
    for own in ("mlp:8,input_mean=0.5", "cnn:4,input_std=2", "tests.helpers:recording_mlp"):
        assert with_input_scaling(own, 0.13, 0.31) == own
    scaled = with_input_scaling("cnn:4", 0.3, 0.4)  # a CNN takes the scaling too
    model = build_model(scaled, (1, 8, 8), 10)
    x = torch.rand(2, 1, 8, 8)
    plain = build_model("cnn:4", (1, 8, 8), 10)
    plain.load_state_dict(model.state_dict())  # the scaling adds no weights
    assert torch.allclose(model(x), plain((x - 0.3) / 0.4))
    with pytest.raises(KDistillError, match=r"do not vary\): use --inputs raw"):
        with_input_scaling("mlp:8", 0.5, 0.00001)  # rounds to a std of 0


def test_standardized_inputs_are_recorded_in_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--inputs", "standardized", *FAST]
    assert main(["train", "--model", "mlp:16", "--out", str(out), *argv]) == 0
    assert _config(out)["model"] == _digits_spec("mlp:16")
    model, _ = load_run_model(out)  # rebuilt from config.json alone, scaling included
    mean, std = _direct_statistics(load_dataset("digits").train.images)
    assert (model.inputs.mean, model.inputs.std) == (round(mean, 4), round(std, 4))
    student = tmp_path / "student"  # distill: the student's own scaling, a transfer subset's too
    distill = ["distill", "--teacher", str(out), "--model", "cnn:4", "--drop-classes", "3"]
    assert main([*distill, "--out", str(student), *argv]) == 0
    assert _config(student)["model"] == _digits_spec("cnn:4")


@pytest.mark.parametrize(
    "model, extra",
    [
        ("mlp:16,input_mean=0.5,input_std=0.5", ["--inputs", "standardized"]),
        ("mlp:16", ["--inputs", "raw"]),
        ("mlp:16", []),  # raw is the default
    ],
)
def test_own_scaling_and_raw_keep_the_spec(tmp_path: Path, model: str, extra: list) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", model, "--out", str(out), *extra, *FAST]) == 0
    assert _config(out)["model"] == model


def test_a_run_resumes_only_with_the_inputs_it_was_made_with(tmp_path: Path, capsys) -> None:
    """A standardized run continues under --inputs standardized; without it (raw, the default,
    as every run made before --inputs) the spec differs and the resume is refused."""
    out = tmp_path / "run"
    argv = ["train", "--model", "mlp:16", "--out", str(out), "--epochs", "2", "--no-progress"]
    assert main([*argv, "--inputs", "standardized"]) == 0
    (out / "metrics.json").unlink()  # as if killed after its last checkpoint
    before = _config(out)
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model: 'mlp:16,input_mean=" in err and "-> 'mlp:16'" in err
    assert main([*argv, "--inputs", "standardized", "--resume"]) == 0
    assert _config(out) == before and (out / "metrics.json").is_file()


def test_bad_inputs_value_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "mlp:16", "--inputs", "scaled", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--inputs" in err and "standardized" in err
    assert not out.exists()


def test_a_standardized_sweep_continues_as_it_was_made(tmp_path: Path) -> None:
    """Re-running a sweep with the command that made it reads its finished cells back."""
    teacher, out = tmp_path / "teacher", tmp_path / "sweep"
    assert main(["train", "--model", "mlp:16", "--out", str(teacher), *FAST]) == 0
    argv = ["sweep", "--teacher", str(teacher), "--model", "mlp:8", "-T", "2", "--alpha", "0.5"]
    argv += ["--out", str(out), "--inputs", "standardized", *FAST]
    assert main(argv) == 0
    cell = out / "T2-alpha0.5-seed0"
    made = (cell / "metrics.json").read_text()
    assert main(argv) == 0  # the same command again: the finished cell is kept
    assert (cell / "metrics.json").read_text() == made
    assert _config(cell)["model"] == _digits_spec("mlp:8")
