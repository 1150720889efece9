"""Soft targets at a temperature, and the input checks every loss shares.

Functions work on logits, like ``torch.nn.functional``. A teacher *ensemble* is given as a
sequence of ``(B, C)`` logit tensors, one per member, or as one ``(M, B, C)`` tensor; its soft
targets are the mean of the members' probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError

TeacherLogits = Tensor | Sequence[Tensor]


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise if it is not a finite number > 0."""
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise KDistillError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise if it is outside [0, 1]."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise KDistillError(
            f"alpha (the weight of the soft-target term) must be in [0, 1], got {alpha!r}"
        )
    return a


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """Class probabilities ``softmax(logits / T)`` over the last dimension.

    A higher temperature gives a softer distribution, which carries more of the teacher's
    knowledge about which wrong classes are *nearly* right (paper, section 2).

    Args:
        logits: ``(..., C)`` unnormalised scores.
        temperature: T > 0; T = 1 is the ordinary softmax.
    """
    return torch.softmax(logits / check_temperature(temperature), dim=-1)


def ensemble_soft_targets(member_logits: Sequence[Tensor] | Tensor, temperature: float) -> Tensor:
    """Soft targets of a teacher ensemble: the mean of the members' ``softmax(z_m / T)``.

    Args:
        member_logits: a sequence of ``(B, C)`` tensors, or one ``(M, B, C)`` tensor.
        temperature: T > 0.
    """
    return log_soft_targets(as_member_logits(member_logits), temperature).exp()


def log_soft_targets(teacher_logits: TeacherLogits, temperature: float) -> Tensor:
    """Log of the teacher's soft targets at T, ``(B, C)``, for one model or an ensemble.

    ``teacher_logits`` is ``(B, C)`` for one model; a sequence of ``(B, C)`` tensors or one
    ``(M, B, C)`` tensor for an ensemble (the log of the mean of the members' probabilities).
    Working in log space keeps the KL term exact when a probability underflows.
    """
    t = check_temperature(temperature)
    if isinstance(teacher_logits, Tensor) and teacher_logits.dim() != 3:
        return F.log_softmax(teacher_logits / t, dim=-1)
    members = torch.stack([F.log_softmax(z / t, dim=-1) for z in teacher_logits])
    # log(mean_m p_m) computed stably as logsumexp_m(log p_m) - log M.
    return torch.logsumexp(members, dim=0) - math.log(members.shape[0])


def as_member_logits(member_logits: Sequence[Tensor] | Tensor) -> Sequence[Tensor]:
    """An ensemble's logits as a sequence of ``(B, C)`` tensors (from ``(M, B, C)`` or a list)."""
    if isinstance(member_logits, Tensor):
        if member_logits.dim() != 3:
            raise KDistillError(
                "ensemble logits must be (members, batch, classes), "
                f"got shape {tuple(member_logits.shape)}"
            )
        return list(member_logits.unbind(0))
    return member_logits


def check_logits(
    student_logits: Tensor,
    teacher_members: Sequence[Tensor],
    labels: Tensor | None,
    *,
    needs_labels: bool,
) -> None:
    """Raise a clear error when logits or labels have shapes that cannot be distilled."""
    if student_logits.dim() != 2:
        raise KDistillError(
            f"student logits must be (batch, classes), got shape {tuple(student_logits.shape)}"
        )
    batch, classes = student_logits.shape
    if len(teacher_members) == 0:
        raise KDistillError("a teacher ensemble needs at least one member")
    for teacher in teacher_members:
        if teacher.dim() != 2 or teacher.shape[0] != batch:
            raise KDistillError(
                f"teacher logits must be (batch, classes) = ({batch}, {classes}), "
                f"got shape {tuple(teacher.shape)}"
            )
        if teacher.shape[1] != classes:
            raise KDistillError(
                f"teacher has {teacher.shape[1]} classes but student has {classes}: "
                "both must predict the same classes"
            )
    if needs_labels:
        if labels is None:
            raise KDistillError("labels are needed when alpha < 1 (the hard-label term)")
        if labels.shape != (batch,):
            raise KDistillError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Raise if ``labels`` are not integer class indices in ``[0, num_classes)``."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise KDistillError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise KDistillError(
            f"labels must be in [0, {num_classes}), got values from {int(labels.min())} "
            f"to {int(labels.max())}"
        )
