"""Shared fixtures: the real MNIST files in ../shared/data and small synthetic splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kdistill.data import Split

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("KDISTILL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real mnist/ and fashion-mnist/ files (skips where it is absent)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real MNIST not found in {SHARED_DATA}")
    return SHARED_DATA


def make_split(n: int = 256, classes: int = 4, shape=(1, 6, 6), seed: int = 0) -> Split:
    """A small learnable split: each class has its own mean image plus noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(classes, *shape, generator=g)
    labels = torch.arange(n) % classes
    images = (means[labels] + 0.15 * torch.randn(n, *shape, generator=g)).clamp(0, 1)
    return Split(images, labels)


@pytest.fixture
def tiny_split() -> Split:
    """256 examples, 4 classes, 1x6x6 inputs."""
    return make_split()
