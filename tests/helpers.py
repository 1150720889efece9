"""Small data and models shared by the tests."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.data import Split


def make_split(n: int = 256, classes: int = 4, shape=(1, 6, 6), seed: int = 0) -> Split:
    """A small learnable split: each class has its own mean image plus noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(classes, *shape, generator=g)
    labels = torch.arange(n) % classes
    images = (means[labels] + 0.15 * torch.randn(n, *shape, generator=g)).clamp(0, 1)
    return Split(images, labels)


def five_way_mlp() -> nn.Module:
    """A model for 8x8 inputs with 5 outputs: a student whose classes differ from digits'."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
