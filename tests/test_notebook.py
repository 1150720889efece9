"""examples/quickstart.ipynb runs from top to bottom (so it cannot rot) and is committed run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    repo = str(NOTEBOOK.parent.parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell

    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = "\n".join(_text(c) for c in code)
    table = [line for line in outputs.splitlines() if re.match(r"\| (teacher|student)", line)]
    assert len(table) == 3, outputs
    errors = [int(line.split("|")[2]) for line in table]
    assert all(0 <= e < 100 for e in errors)  # each model learned (chance is 450 of 500 wrong)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert "Warning" not in "".join(
        o.get("text", "") for c in code for o in c.outputs if o.get("name") == "stderr"
    )
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # training curves and soft targets
    assert (tmp_path / "quickstart_soft_targets.png").is_file()


def test_quickstart_notebook_is_committed_with_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    assert "student distilled" in "".join(_text(c) for c in code)
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) == 2
