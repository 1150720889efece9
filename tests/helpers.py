"""Small data and models shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

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


def recording_mlp(hidden: int = 16) -> nn.Module:
    """A digits MLP whose function leaves a mark (file $KDISTILL_TEST_CALLED) when called."""
    marker = os.environ.get("KDISTILL_TEST_CALLED")
    if marker:
        Path(marker).write_text("called")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def not_a_module() -> str:
    """A model function that returns something other than an nn.Module."""
    return "not a model"


class ExplodesLater(nn.Module):
    """A linear classifier whose logits blow up after ``after`` training steps (divergence)."""

    def __init__(self, inputs: int, classes: int, after: int) -> None:
        super().__init__()
        self.linear = nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))
        self.after, self.steps = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.steps += 1
        scale = -1e30 if self.steps > self.after else 1.0  # confidently wrong
        return self.linear(x) * scale
