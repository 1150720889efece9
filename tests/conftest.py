"""Shared fixtures: the real MNIST files in ../shared/data and small synthetic splits."""

from __future__ import annotations

import os
from pathlib import Path

import kdistill  # noqa: F401  (before torch: its OpenMP wait policy must be set first)

# isort: split
import pytest
import torch

from kdistill.data import Split
from tests.helpers import make_split

# The tests train tiny models, which run fastest on one thread, and a shared 2-core machine
# thrashes when several processes each spin two; subprocesses inherit the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("KDISTILL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real mnist/ and fashion-mnist/ files (skips where it is absent)."""
    if not (SHARED_DATA / "mnist").is_dir():
        if os.environ.get("CI"):  # CI always has ../shared: a missing copy is a failure there
            pytest.fail(f"real MNIST not found in {SHARED_DATA}")
        pytest.skip(f"real MNIST not found in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_split() -> Split:
    """256 examples, 4 classes, 1x6x6 inputs."""
    return make_split()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say, without ``-rs``, that MNIST tests were skipped and how to run them."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "real MNIST not found" in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped: set KDISTILL_DATA=/path/to/data (a folder holding "
            "mnist/ and fashion-mnist/, e.g. from `kdistill train --dataset mnist --download`) "
            "to run the MNIST tests",
            yellow=True,
        )
