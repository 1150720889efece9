"""The distillation objective of Hinton, Vinyals & Dean (2015): functional form and the loss.

:func:`distillation_loss` is the checked function, :class:`DistillationLoss` its thin module
(both return one tensor), and :class:`HintonLoss` (registered as ``"hinton"``) the same
objective as the training loop calls it: ``{"soft": ..., "hard": ...}``. All three compute the
terms with :func:`hinton_terms`, so what a test checks is what training runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.errors import KDistillError
from kdistill.losses.base import DistillationObjective, sum_terms
from kdistill.losses.logit_utils import check_flag, soft_and_hard_terms, student_log_probs
from kdistill.losses.logit_utils import teacher_log_probs as teacher_log_probs_at
from kdistill.losses.registry import register
from kdistill.losses.targets import (
    TeacherLogits,
    check_alpha,
    check_labels,
    check_logits,
    check_temperature,
    log_soft_targets,
)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: TeacherLogits,
    labels: Tensor | None = None,
    *,
    temperature: float,
    alpha: float,
    standardize: bool = False,
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
        teacher_logits: ``(B, C)``; for an ensemble a sequence of ``(B, C)`` tensors or one
            ``(M, B, C)`` tensor, whose soft targets are the mean of the members'
            probabilities at T.
        labels: ``(B,)`` class indices in ``[0, C)``; needed unless ``alpha == 1``.
        temperature: T > 0.
        alpha: weight of the soft-target term in [0, 1]; 0 is plain cross-entropy.
        standardize: z-score each logit vector before the softmax (logit standardisation, Sun
            et al., CVPR 2024, :func:`~kdistill.losses.standardize.standardize_logits`; T is
            then the base temperature). Default: False.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: on a bad temperature or alpha, mismatched shapes or class counts, missing
            labels or labels out of range.
    """
    temperature = check_temperature(temperature)
    alpha = check_alpha(alpha)
    standardize = check_flag("standardize", standardize)
    if isinstance(teacher_logits, Tensor):
        members = list(teacher_logits.unbind(0)) if teacher_logits.dim() == 3 else [teacher_logits]
    else:
        members = list(teacher_logits)
    check_logits(student_logits, members, labels, needs_labels=alpha < 1)
    if labels is not None and alpha < 1:
        check_labels(labels, student_logits.shape[-1])
    return distillation_loss_unchecked(
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


def distillation_loss_unchecked(
    student_logits: Tensor,
    teacher_logits: TeacherLogits | None,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    teacher_log_probs: Tensor | None = None,
    standardize: bool = False,
) -> Tensor:
    """:func:`distillation_loss` without validation: the sum of :func:`hinton_terms`.

    ``teacher_log_probs`` may be given instead of ``teacher_logits`` when the soft targets were
    precomputed.
    """
    terms = hinton_terms(
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        teacher_log_probs=teacher_log_probs,
        standardize=standardize,
    )
    return sum_terms(terms)


def hinton_terms(
    student_logits: Tensor,
    teacher_logits: TeacherLogits | None,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    teacher_log_probs: Tensor | None = None,
    standardize: bool = False,
) -> dict[str, Tensor]:
    """The two weighted terms of the objective, unchecked: ``soft`` (if alpha > 0), ``hard``
    (if alpha < 1). A term of weight 0 is left out, so its work is not done.

    With ``standardize`` both logit vectors are z-scored before the softmax (an ensemble's
    members each on their own); precomputed ``teacher_log_probs`` must then come from
    standardised logits."""

    def soft() -> Tensor:
        log_p = teacher_log_probs
        if log_p is None:
            if teacher_logits is None:
                raise KDistillError(
                    "the 'hinton' loss needs a teacher (alpha > 0): give one, or train on hard "
                    "labels with the 'cross-entropy' loss"
                )
            if standardize:
                members = teacher_logits
                if not isinstance(members, Tensor):
                    members = torch.stack(list(members))
                log_p = teacher_log_probs_at(members, temperature, True)
            else:
                log_p = log_soft_targets(teacher_logits, temperature)
        log_q = student_log_probs(student_logits, temperature, standardize)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)

    return soft_and_hard_terms(
        "soft", soft, student_logits, labels, temperature=temperature, alpha=alpha
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


@register
class HintonLoss(DistillationObjective):
    """Hinton et al. (2015) as the loop calls it: ``{"soft": ..., "hard": ...}`` per batch.

    ``soft`` is ``alpha * T^2 * KL(softmax(v/T) || softmax(z/T))`` (an ensemble's soft targets
    are the mean of its members' probabilities), ``hard`` is ``(1 - alpha) * CE(z, y)``; a term
    of weight 0 is left out. Their sum is :func:`distillation_loss`, bit for bit.

    Args:
        temperature: T > 0 (default 1).
        alpha: weight of the soft-target term in [0, 1] (default 1: soft targets only, as in
            the paper's MNIST students).
        standardize: logit standardisation before the softmax (Sun et al., CVPR 2024; T is then
            the base temperature) (default False).
    """

    name = "hinton"
    supports_ensemble = True

    def __init__(
        self, temperature: float = 1.0, alpha: float = 1.0, standardize: bool = False
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_alpha(alpha)
        self.standardize = check_flag("standardize", standardize)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The weighted soft and hard terms of a batch (see the class docstring)."""
        return hinton_terms(
            student_logits,
            teacher_logits,
            labels,
            temperature=self.temperature,
            alpha=self.alpha,
            standardize=self.standardize,
        )

    def arguments(self) -> dict[str, Any]:
        """``{"temperature": T, "alpha": alpha}``, and ``"standardize": True`` when set.

        A run without standardisation records the same arguments as before the switch
        existed, so its config compares equal on resume.
        """
        values: dict[str, Any] = {"temperature": self.temperature, "alpha": self.alpha}
        if self.standardize:
            values["standardize"] = True
        return values
