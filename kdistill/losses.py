"""Distillation losses: soft targets at a temperature and the Hinton et al. (2015) objective.

Functions work on logits, like ``torch.nn.functional``; :class:`DistillationLoss` is the thin
``nn.Module`` around :func:`distillation_loss`. A teacher *ensemble* is given as a sequence of
logit tensors, one per member; its soft targets are the mean of the members' probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    return log_soft_targets(_as_members(member_logits), temperature).exp()


def log_soft_targets(teacher_logits: TeacherLogits, temperature: float) -> Tensor:
    """Log of the teacher's soft targets at T, for one model or an ensemble.

    Working in log space keeps the KL term exact when a probability underflows.
    """
    t = check_temperature(temperature)
    if isinstance(teacher_logits, Tensor):
        return F.log_softmax(teacher_logits / t, dim=-1)
    members = torch.stack([F.log_softmax(z / t, dim=-1) for z in teacher_logits])
    # log(mean_m p_m) computed stably as logsumexp_m(log p_m) - log M.
    return torch.logsumexp(members, dim=0) - math.log(members.shape[0])


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: TeacherLogits,
    labels: Tensor | None = None,
    *,
    temperature: float,
    alpha: float,
) -> Tensor:
    r"""The distillation objective of Hinton, Vinyals & Dean (2015), section 2.

    .. math::
        \alpha T^2 \, \mathrm{KL}\big(\mathrm{softmax}(v/T) \,\|\, \mathrm{softmax}(z/T)\big)
        + (1 - \alpha)\, \mathrm{CE}(z, y)

    with student logits ``z``, teacher logits ``v`` and labels ``y``. The KL divergence is summed
    over classes and averaged over the batch ("batchmean"), as is the cross-entropy.

    The paper writes the soft term as the cross-entropy ``-sum_i p_i log q_i`` with the teacher's
    soft targets ``p``. KL differs from it by the teacher's entropy ``-sum_i p_i log p_i``, which
    does not depend on the student, so the two have the same gradient; KL is reported because
    it is 0 when the student matches the teacher. The gradient of the soft term (without the
    T^2) with respect to ``z_i`` is ``(q_i - p_i) / T`` per example (paper, eq. 2); multiplying
    by T^2 keeps its scale constant as T changes, so alpha means the same at every T.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or a sequence of ``(B, C)`` tensors for an ensemble, whose
            soft targets are the mean of the members' probabilities at T.
        labels: ``(B,)`` class indices in ``[0, C)``; needed unless ``alpha == 1``.
        temperature: T > 0.
        alpha: weight of the soft-target term in [0, 1]; 0 is plain cross-entropy.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: on a bad temperature or alpha, mismatched shapes or class counts, missing
            labels or labels out of range.
    """
    temperature = check_temperature(temperature)
    alpha = check_alpha(alpha)
    members = [teacher_logits] if isinstance(teacher_logits, Tensor) else list(teacher_logits)
    check_logits(student_logits, members, labels, needs_labels=alpha < 1)
    if labels is not None and alpha < 1:
        check_labels(labels, student_logits.shape[-1])
    return distillation_loss_unchecked(
        student_logits, teacher_logits, labels, temperature=temperature, alpha=alpha
    )


def distillation_loss_unchecked(
    student_logits: Tensor,
    teacher_logits: TeacherLogits | None,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    teacher_log_probs: Tensor | None = None,
) -> Tensor:
    """:func:`distillation_loss` without validation, for the training loop's hot path.

    The loop validates its inputs once; this skips the per-step checks (a label range check
    costs a device synchronisation). ``teacher_log_probs`` may be given instead of
    ``teacher_logits`` when the soft targets were precomputed.
    """
    loss = student_logits.new_zeros(())
    if alpha > 0:
        if teacher_log_probs is None:
            teacher_log_probs = log_soft_targets(teacher_logits, temperature)
        student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
        kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
        loss = loss + alpha * temperature**2 * kl
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


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


class DistillationLoss(nn.Module):
    """``nn.Module`` form of :func:`distillation_loss` with a fixed temperature and alpha.

    Example::

        criterion = DistillationLoss(temperature=20.0, alpha=0.9)
        loss = criterion(student(x), teacher_logits, y)
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.5) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_alpha(alpha)

    def forward(
        self, student_logits: Tensor, teacher_logits: TeacherLogits, labels: Tensor | None = None
    ) -> Tensor:
        """Return the distillation loss of a batch."""
        return distillation_loss(
            student_logits, teacher_logits, labels, temperature=self.temperature, alpha=self.alpha
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


def _as_members(member_logits: Sequence[Tensor] | Tensor) -> Sequence[Tensor]:
    if isinstance(member_logits, Tensor):
        if member_logits.dim() != 3:
            raise KDistillError(
                "ensemble logits must be (members, batch, classes), "
                f"got shape {tuple(member_logits.shape)}"
            )
        return list(member_logits.unbind(0))
    return member_logits
