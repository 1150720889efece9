"""The examples of README.md and docs/guide.md run as written (so the docs cannot rot)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdistill.cli import main
from kdistill.losses.registry import LOSSES
from kdistill.train import evaluate

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "guide.md"
DOCS = [REPO / "README.md", GUIDE]


def _python_blocks() -> list:
    """Every fenced ```python block of the docs, as ``pytest.param(code, id=file:line)``."""
    blocks = []
    for doc in DOCS:
        text = doc.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(pytest.param(doc, line, match.group(1), id=f"{doc.name}:{line}"))
    return blocks


def test_the_docs_have_python_blocks() -> None:
    assert len(_python_blocks()) >= 5  # the README's and the guide's; a broken regex finds none


@pytest.mark.parametrize(("doc", "line", "code"), _python_blocks())
def test_every_python_block_runs(doc: Path, line: int, code: str, tmp_path, monkeypatch) -> None:
    """Each block runs as written in a fresh folder holding what the docs' earlier commands
    made (``runs/teacher``, a digits run), with ``KDISTILL_DATA`` at the shared data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDISTILL_DATA", str(REPO.parent / "shared" / "data"))
    if "runs/teacher" in code:
        fast = ["--model", "mlp:16", "--epochs", "2", "--no-progress", "--device", "cpu"]
        assert main(["train", *fast, "--out", "runs/teacher"]) == 0
    losses = dict(LOSSES)
    torch.manual_seed(0)
    try:
        code = "\n" * line + code  # tracebacks name the line in the doc
        exec(compile(code, str(doc), "exec"), {"__name__": "__doc_block__"})  # noqa: S102
    finally:
        LOSSES.clear()
        LOSSES.update(losses)  # a block's own registered loss does not leak into other tests


def _block(tag: str) -> str:
    """The fenced code block right after ``<!-- tested: tag -->``."""
    match = re.search(rf"<!-- tested: {tag} -->\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert match, f"no block tagged {tag} in {GUIDE}"
    return match.group(1)


def test_own_teacher_example_is_short_and_distills(tmp_path: Path, monkeypatch, capsys) -> None:
    code = _block("own-teacher")
    assert len(code.strip().splitlines()) < 20
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: much faster on a busy machine
    namespace: dict = {}
    try:
        exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    student, test = namespace["student"], namespace["test"]
    errors = evaluate(student, test)["errors"]
    assert f"{errors} test errors of 500" in capsys.readouterr().out
    assert errors < 0.2 * len(test)  # the toy task is learnt (chance: half wrong)


def test_cli_module_function_example(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_models.py").write_text(_block("my-models"))
    commands = [
        shlex.split(line)
        for line in _block("cli-own-model").replace("\\\n", " ").splitlines()
        if line.startswith("kdistill ")
    ]
    assert len(commands) == 3
    fast = ["--epochs", "2", "--no-progress", "--device", "cpu"]
    for command in commands[:2]:
        assert main(command[1:] + fast) == 0
    # The third command's teacher.pt: the first run's teacher saved the plain PyTorch way.
    import my_models

    teacher = my_models.my_cnn(channels=16)
    teacher.load_state_dict(load_file("runs/teacher/model.safetensors"))
    torch.save(teacher.state_dict(), "teacher.pt")
    assert main(commands[2][1:] + fast) == 0
    a, b = (load_file(f"runs/{n}/model.safetensors") for n in ("student", "student-from-pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same teacher either way
