"""Reverse-KL distillation: the student's distribution first, ``KL(p_s || p_t)`` (mode seeking)."""

from __future__ import annotations

from torch import Tensor

from kdistill.losses.logit_utils import (
    SoftTargetObjective,
    kl_per_example,
    soft_target_loss,
    soft_target_terms,
)
from kdistill.losses.registry import register

NAME = "reverse-kl"
TERM = "reverse_kl"


def reverse_kl_divergence(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(q || p)`` of each row: the student's ``log_q`` first, the teacher's ``log_p``."""
    return kl_per_example(log_q, log_p)


def reverse_kl_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`reverse_kl_loss`, without validation (the hot path).

    Returns:
        ``{"reverse_kl": alpha T^2 KL(p_s || p_t), "hard": (1 - alpha) CE}``, without a term whose
        weight is 0.
    """
    return soft_target_terms(
        TERM,
        reverse_kl_divergence,
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


def reverse_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    r"""Reverse-KL distillation: the student's distribution comes first in the KL.

    .. math::
        \alpha T^2 \, \frac{1}{B}\sum_b \mathrm{KL}\big(q_b \,\|\, p_b\big)
        + (1 - \alpha)\, \mathrm{CE}(z, y),
        \qquad \mathrm{KL}(q \| p) = \sum_c q_c \log \frac{q_c}{p_c}

    with the student's ``q = softmax(z / T)`` and the teacher's ``p = softmax(v / T)``. The
    forward KL of Hinton et al. (2015), ``KL(p || q)``, is mass covering: the student is
    penalised wherever the teacher has mass it lacks. The reverse KL is mode seeking: it
    penalises the student for putting mass where the teacher has little, so a student too small
    to cover every mode of the teacher concentrates on the main one. It is the divergence of
    MiniLLM (Gu et al., ICLR 2024) and the ``beta = 1`` end of GKD's generalised JSD (Agarwal
    et al., ICLR 2024); DistiLLM's ``reverse_kl`` computes the same value at T = 1.

    ``T^2`` scales the soft term as in :func:`~kdistill.losses.hinton.distillation_loss` (its
    gradient with respect to the logits is O(1/T^2) at high T, as the forward KL's is), and
    ``alpha`` weighs the soft term as there.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble, whose distribution is the
            mean of its members' probabilities at T.
        labels: ``(B,)`` class indices; needed unless ``alpha == 1``.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]; the hard-label cross-entropy (on the raw
            logits) gets ``1 - alpha``. Default: 1 (soft term only, as ``hinton``).
        standardize: z-score both logit vectors first (logit standardisation, Sun et al. 2024;
            T is then the base temperature). Default: False.

    Returns:
        A scalar tensor.
    """
    return soft_target_loss(
        NAME,
        TERM,
        reverse_kl_divergence,
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


@register
class ReverseKLLoss(SoftTargetObjective):
    """:func:`reverse_kl_loss` as the training loop calls it: ``{"reverse_kl", "hard"}`` terms.

    Args:
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    name = NAME
    term = TERM
    divergence = staticmethod(reverse_kl_divergence)
