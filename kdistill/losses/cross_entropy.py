"""Training on hard labels as a loss object (``"cross-entropy"``), so the loop names no loss."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from kdistill.losses.base import DistillationObjective
from kdistill.losses.registry import register


@register
class CrossEntropyLoss(DistillationObjective):
    """Plain cross-entropy on the labels, ``{"hard": CE(z, y)}``; a teacher is ignored."""

    name = "cross-entropy"
    supports_ensemble = True  # it ignores the teacher, whatever its shape

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The mean cross-entropy of the batch."""
        return {"hard": F.cross_entropy(student_logits, labels)}

    def arguments(self) -> dict[str, Any]:
        """No arguments."""
        return {}
