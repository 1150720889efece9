"""Your own teacher and data: torch Datasets and DataLoaders in fit, teacher logits cached by
example index, plain state_dict teachers, and ``module:function`` models from the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill.cli import main
from kdistill.data import DatasetBatches, Split
from kdistill.errors import KDistillError
from kdistill.train import TrainConfig, evaluate, fit
from tests.helpers import make_split

CONFIG = TrainConfig(
    epochs=3, batch_size=32, lr=0.1, device="cpu", loss_args={"temperature": 3.0, "alpha": 0.7}
)
HARD = replace(CONFIG, loss_args={})  # hard labels: no loss arguments


class CountingTeacher(nn.Module):
    """A fixed linear teacher that counts the examples it scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.net(x)


def _student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Dropout(0.2), nn.Linear(16, 4))


def _same(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


class Shifted(torch.utils.data.Dataset):
    """A Dataset with random augmentation (a random brightness shift per read)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.split.images[i] + 0.01 * torch.rand(()), self.split.labels[i]


def test_dataset_path_is_bitwise_the_in_memory_path() -> None:
    split, test = make_split(), make_split(64, seed=1)
    in_memory, from_dataset = _student(), _student()
    teacher = CountingTeacher()
    a = fit(in_memory, split, CONFIG, teacher=teacher, test=test, progress=False)
    teacher.seen = 0
    dataset = TensorDataset(split.images, split.labels)
    b = fit(from_dataset, dataset, CONFIG, teacher=teacher, test=test, progress=False)
    assert _same(in_memory, from_dataset)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    # Logits cached by example index: the teacher saw the transfer set once (plus one probe).
    assert teacher.seen == len(split) + 1
    assert evaluate(from_dataset, test) == evaluate(
        from_dataset, TensorDataset(test.images, test.labels)
    )


def test_randomly_augmented_dataset_runs_the_teacher_online() -> None:
    split = make_split()
    teacher = CountingTeacher()
    assert not DatasetBatches(Shifted(split)).is_deterministic()
    fit(_student(), Shifted(split), CONFIG, teacher=teacher, progress=False)
    assert teacher.seen == 1 + CONFIG.epochs * len(split)  # probe + every batch of every epoch


def test_dataloader_is_used_as_given_and_learns() -> None:
    split = make_split(512)
    loader = DataLoader(TensorDataset(split.images, split.labels), batch_size=64, shuffle=True)
    student, teacher = _student(), CountingTeacher()
    config = TrainConfig(
        epochs=4, lr=0.2, device="cpu", loss_args={"temperature": 2.0, "alpha": 0.5}
    )
    result = fit(student, loader, config, teacher=teacher, test=loader, progress=False)
    assert len(result.history) == 4 and teacher.seen == 1 + 4 * 512
    assert result.history[-1]["test_errors"] < 0.5 * 512 * 0.75  # well below chance (3/4 wrong)


def test_dataloader_run_resumes_exactly(tmp_path: Path) -> None:
    """Its shuffling draws on the global RNG, which the checkpoint restores."""
    split = make_split()

    def run(folder: Path, stop_after: int | None = None, resume: bool = False) -> nn.Module:
        student = _student()
        loader = DataLoader(TensorDataset(split.images, split.labels), batch_size=50, shuffle=True)

        def on_epoch(history: list[dict]) -> None:
            if len(history) == stop_after:
                raise KeyboardInterrupt

        try:
            fit(student, loader, HARD, checkpoint_dir=folder, resume=resume, progress=False,
                on_epoch=on_epoch)  # fmt: skip
        except KeyboardInterrupt:
            pass
        return student

    run(tmp_path / "a", stop_after=1)
    assert _same(run(tmp_path / "a", resume=True), run(tmp_path / "b"))


def test_teacher_logits_given_by_index_for_a_dataset() -> None:
    split = make_split()
    teacher = CountingTeacher()
    with torch.no_grad():
        logits = teacher(split.images)
    a, b = _student(), _student()
    dataset = TensorDataset(split.images, split.labels)
    fit(a, dataset, CONFIG, teacher_logits=logits, progress=False)
    fit(b, split, CONFIG, teacher=teacher, progress=False)
    assert _same(a, b)
    with pytest.raises(KDistillError, match="teacher logits have shape"):
        fit(_student(), dataset, CONFIG, teacher_logits=logits[:-1], progress=False)
    with pytest.raises(KDistillError, match="pass the Dataset itself"):
        fit(_student(), DataLoader(dataset), CONFIG, teacher_logits=logits, progress=False)


def test_bad_datasets_are_clear_errors() -> None:
    with pytest.raises(KDistillError, match="training data must be"):
        fit(_student(), [1, 2, 3], HARD, progress=False)
    with pytest.raises(KDistillError, match="empty"):
        fit(_student(), TensorDataset(torch.zeros(0, 1, 6, 6), torch.zeros(0)), HARD)
    split = make_split()
    bad = TensorDataset(split.images, split.labels + 10)
    with pytest.raises(KDistillError, match=r"labels must be in \[0, 4\)"):
        fit(_student(), bad, HARD, progress=False)
    with pytest.raises(KDistillError, match="val_fraction needs an in-memory Split"):
        fit(_student(), TensorDataset(split.images, split.labels),
            TrainConfig(val_fraction=0.2, device="cpu"), progress=False)  # fmt: skip


# --------------------------------------------------------------------------- the CLI

MODELS = """
import torch
from torch import nn


def tiny_cnn(channels=4):
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(channels * 16, 10),
    )
"""

COMMON = ["--epochs", "2", "--batch-size", "256", "--device", "cpu", "--no-progress"]


def _one_line_error(capsys, status: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("kdistill: error:"), err
    for needle in needles:
        assert needle in err, err


def test_cli_module_function_models_and_state_dict_teacher(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "kd_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)  # the model file beside the user, as from a shell

    assert main(["train", "--model", "kd_models:tiny_cnn,channels=6", "--out", "t", *COMMON]) == 0
    assert json.loads(Path("t/config.json").read_text())["model"] == "kd_models:tiny_cnn,channels=6"

    # A teacher trained elsewhere, saved the plain PyTorch way.
    import kd_models  # noqa: PLC0415
    from safetensors.torch import load_file

    teacher = kd_models.tiny_cnn(channels=6)
    teacher.load_state_dict(load_file("t/model.safetensors"))
    torch.save(teacher.state_dict(), "teacher.pt")
    args = ["distill", "--teacher", "teacher.pt", "--model", "mlp:16", "-T", "4", *COMMON]
    assert main([*args, "--teacher-model", "kd_models:tiny_cnn,channels=6", "--out", "d"]) == 0
    from_run = ["distill", "--teacher", "t", "--model", "mlp:16", "-T", "4", *COMMON, "--out", "e"]
    assert main(from_run) == 2  # the run folder names code: loading it needs the user's word
    assert "--trust-code" in capsys.readouterr().err and not Path("e").exists()
    assert main([*from_run, "--trust-code"]) == 0
    assert load_file("d/model.safetensors").keys() == load_file("e/model.safetensors").keys()
    for key, value in load_file("d/model.safetensors").items():
        assert torch.equal(value, load_file("e/model.safetensors")[key])  # same teacher, same run
    capsys.readouterr()

    # One-line errors.
    _one_line_error(capsys, main([*args, "--out", "x"]), "--teacher-model")
    _one_line_error(
        capsys, main([*args, "--teacher-model", "kd_models:tiny_cnn,channels=5", "--out", "x"]),
        "do not fit the model",
    )  # fmt: skip
    torch.save(teacher, "pickled_module.pt")  # a whole pickled module: refused
    _one_line_error(
        capsys,
        main(["distill", "--teacher", "pickled_module.pt", "--teacher-model", "cnn:4",
              "--model", "mlp:8", *COMMON, "--out", "x"]),
        "only plain state_dicts load",
    )  # fmt: skip
    _one_line_error(
        capsys, main(["train", "--model", "no_such_module:f", *COMMON, "--out", "x"]),
        "no_such_module",
    )  # fmt: skip
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('boom\\nmore')\n")
    _one_line_error(
        capsys, main(["train", "--model", "broken_models:f", *COMMON, "--out", "x"]), "boom"
    )
    _one_line_error(
        capsys,
        main(["train", "--model", "kd_models:nope", *COMMON, "--out", "x"]),
        "no function",
    )
    _one_line_error(
        capsys, main(["train", "--model", "kd_models:tiny_cnn,width=3", *COMMON, "--out", "x"]),
        "unexpected keyword",
    )  # fmt: skip
