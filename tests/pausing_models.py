"""Model functions for tests that go through the CLI as ``module:function`` specs.

``pausing_mlp`` stops (sleeps) at a chosen training step so a test can SIGKILL the process at a
known moment mid-epoch. The step comes from the environment, not the spec, so the killed run and
its resumed continuation have the same config.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

PAUSE_AT = "KDISTILL_TEST_PAUSE_AT_STEP"
MARKER = "KDISTILL_TEST_PAUSE_MARKER"


class PausingMLP(nn.Module):
    """An MLP with dropout that, when asked, writes a marker file and sleeps at one step."""

    def __init__(
        self, hidden: int = 32, classes: int = 10, inputs: int = 64, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )
        self.training_steps = 0
        self.pause_at = int(os.environ.get(PAUSE_AT, "0"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.training_steps += 1
            if self.training_steps == self.pause_at:
                Path(os.environ[MARKER]).write_text(str(self.training_steps))
                time.sleep(600)  # the test kills us here
        return self.net(x)


def pausing_mlp(hidden: int = 32, dropout: float = 0.2) -> nn.Module:
    """The 8x8-digits MLP used by the kill-and-resume tests."""
    return PausingMLP(hidden, dropout=dropout)


def small_cnn(channels: int = 8) -> nn.Module:
    """A user's own CNN for 1x8x8 digits, as a ``module:function`` teacher."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 16, 10),
    )
