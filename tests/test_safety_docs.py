"""Issue 11, items 11-14 and 18: the documented ways of installing, testing, importing and
plotting behave as documented (the rest of issue 11 is in test_safety.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kdistill.runs as runs_module
from kdistill.cli import main
from kdistill.reports import curves_figure
from kdistill.runs import read_history

REPO = Path(__file__).resolve().parent.parent
FAST = ["--epochs", "2", "--batch-size", "128", "--lr", "0.05", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run on hard labels and one distilled from it at alpha 0.5 (both terms logged)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "--model", "mlp:16", "--out", str(root / "alone"), *FAST]) == 0
    distill = ["distill", "--teacher", str(root / "alone"), "--model", "mlp:8", "-T", "4"]
    assert main([*distill, "--alpha", "0.5", "--out", str(root / "distilled"), *FAST]) == 0
    return {"alone": root / "alone", "distilled": root / "distilled"}


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True, text=True, env=environ, timeout=120, check=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- 12. import order


def test_importing_kdistill_after_torch_warns_once_and_first_does_not():
    late = _python(
        "import torch\n"
        "torch.ones(64, 64) @ torch.ones(64, 64)\n"
        "import kdistill, kdistill._openmp as o, importlib\n"
        "importlib.reload(o)\n"  # a second try to apply it says nothing more
        "import os; print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    assert late.stderr.count("RuntimeWarning") == 1, late.stderr
    assert "import kdistill before torch" in late.stderr.lower().replace("\n", " ")
    assert "OMP_WAIT_POLICY=PASSIVE" in late.stderr
    assert late.stdout.strip() == "PASSIVE"  # child processes still get it

    first = _python("import kdistill, torch\ntorch.ones(64, 64) @ torch.ones(64, 64)\n")
    assert "Warning" not in first.stderr, first.stderr
    chosen = _python("import torch, kdistill", OMP_WAIT_POLICY="ACTIVE")  # the user's choice
    assert "Warning" not in chosen.stderr, chosen.stderr


# --------------------------------------------------------------------------- 18. plot, progress


def test_plot_writes_the_format_its_suffix_names(runs, tmp_path, capsys):
    for suffix, magic in ((".pdf", b"%PDF"), (".png", b"\x89PNG"), (".svg", b"<?xml")):
        out = tmp_path / f"curves{suffix}"
        assert main(["plot", str(runs["alone"]), str(runs["distilled"]), "--out", str(out)]) == 0
        assert out.read_bytes().startswith(magic), suffix
    capsys.readouterr()
    for out, message in (
        (tmp_path / "missing" / "curves.pdf", "does not exist"),
        (tmp_path / "curves.docx", "cannot write a figure as .docx"),
    ):
        assert main(["plot", str(runs["alone"]), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kdistill: error: ") and message in err[0]
    assert not (tmp_path / "missing").exists()
    assert not list(tmp_path.glob("*.docx"))


def test_plot_keeps_distillation_and_cross_entropy_apart_and_labels_clear(runs):
    histories = {name: read_history(folder / "history.csv") for name, folder in runs.items()}
    fig = curves_figure(histories)
    soft = [row["train_soft"] for row in histories["distilled"]]
    cross_entropy = [row["train_hard"] for row in histories["alone"]]
    drawn = [[list(line.get_ydata()) for line in ax.get_lines()] for ax in fig.axes]
    assert sum(soft in lines for lines in drawn) == 1
    assert sum(cross_entropy in lines for lines in drawn) == 1
    assert not any(soft in lines and cross_entropy in lines for lines in drawn)  # own panels
    assert not any(
        sum(row["train_loss"] for row in histories["distilled"]) == sum(ys)
        for lines in drawn
        for ys in lines
    )  # fmt: skip  (no soft + hard total)

    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]  # with titles and tick labels
    legend = fig.legends[0].get_window_extent(renderer)
    for i, box in enumerate(boxes):
        assert not box.overlaps(legend), "the legend covers a panel"
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), "panels overlap"
    assert {t.get_text() for t in fig.legends[0].get_texts()} == set(runs)


def test_progress_bar_only_on_a_terminal_and_ctrl_c_on_its_own_line(tmp_path, monkeypatch, capsys):
    assert main(["train", "--model", "mlp:8", "--out", str(tmp_path / "log"), *FAST]) == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: a log file, say
    assert "\r" not in err and "step" not in err, err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    real_fit = runs_module.fit

    def fit_then_interrupt(*args, on_epoch=None, **kwargs):
        def hook(history):
            raise KeyboardInterrupt

        return real_fit(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(runs_module, "fit", fit_then_interrupt)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", "--model", "mlp:8", "--out", str(tmp_path / "tty"), *FAST]) == 130
    text = terminal.getvalue()
    assert "step" in text  # a terminal gets the bar
    screen = []  # what the terminal shows: "\r" returns to the start of the line, then overwrites
    for line in text.split("\n"):
        shown: list[str] = []
        column = 0
        for char in line:
            if char == "\r":
                column = 0
                continue
            shown[column : column + 1] = [char]
            column += 1
        screen.append("".join(shown).rstrip())
    message = [line for line in screen if "kdistill: interrupted" in line]
    assert len(message) == 1 and message[0].startswith("kdistill: interrupted"), screen


# --------------------------------------------------------------------------- 14. skipped tests


def test_skipped_mnist_tests_say_how_to_run_them(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(KDISTILL_DATA=str(tmp_path), PYTHONPATH=str(REPO))
    test = "tests/test_safety.py::test_valid_files_of_another_dataset_are_named"
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", test],
        cwd=REPO, capture_output=True, text=True, env=environ, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 tests skipped: set KDISTILL_DATA=" in ran.stdout, ran.stdout
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "KDISTILL_DATA=/path/to/data python -m pytest" in readme


# --------------------------------------------------------------------------- 13. install size


def test_readme_says_how_to_install_without_cuda():
    readme = " ".join((REPO / "README.md").read_text().split())
    install = readme[: readme.index("## The demo")]
    assert "CUDA libraries (several GB)" in install
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in install
