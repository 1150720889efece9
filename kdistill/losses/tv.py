"""Total-variation distillation: half the L1 distance between teacher and student probabilities."""

from __future__ import annotations

from torch import Tensor

from kdistill.losses.logit_utils import SoftTargetObjective, soft_target_loss, soft_target_terms
from kdistill.losses.registry import register

NAME = "tv"
TERM = "tv"


def tv_distance(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``TV(p, q) = 1/2 sum_c |p_c - q_c|`` of each row, from log-probabilities."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(dim=-1)


def tv_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`tv_loss`, without validation (the hot path).

    Returns:
        ``{"tv": alpha T^2 TV(p_t, p_s), "hard": (1 - alpha) CE}``, without a term whose weight
        is 0.
    """
    return soft_target_terms(
        TERM,
        tv_distance,
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=False,
    )


def tv_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> Tensor:
    r"""Distillation with the total-variation distance between the two distributions.

    .. math::
        \alpha T^2 \, \frac{1}{B}\sum_b \mathrm{TV}(p_b, q_b) + (1 - \alpha)\,\mathrm{CE}(z, y),
        \qquad \mathrm{TV}(p, q) = \tfrac12 \sum_c |p_c - q_c|

    with the teacher's ``p = softmax(v / T)`` and the student's ``q = softmax(z / T)``. TV is a
    symmetric metric bounded by ``0 <= TV <= 1`` (and by Pinsker, ``TV <= sqrt(KL / 2)`` for
    either KL), so one example the teacher and student disagree on completely cannot dominate a
    batch as it can with a KL. Its gradient does not vanish as the distributions approach each
    other (it is a sign, not a difference), and it is not differentiable where ``p_c = q_c``
    (autograd takes 0 there). It is one of the divergences compared by DistiLLM (Ko et al.,
    ICML 2024), whose ``tv_distance`` computes the same value at T = 1.

    The ``T^2`` factor is kept for uniformity with the ``hinton`` loss, so that alpha and
    temperature mean the same across the family; but unlike a KL's, the TV gradient shrinks only
    as about ``1/T`` at high T, so ``T^2`` makes it *grow* with T: at a high T, lower the
    learning rate or alpha, or use T = 1 (where the factor is 1).

    No logit standardisation switch: TV is not a KL, and the standardisation paper defines it for
    the KL-based losses only.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble, whose distribution is the
            mean of its members' probabilities at T.
        labels: ``(B,)`` class indices; needed unless ``alpha == 1``.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]; the hard-label cross-entropy gets
            ``1 - alpha``. Default: 1 (soft term only, as ``hinton``).

    Returns:
        A scalar tensor.
    """
    return soft_target_loss(
        NAME,
        TERM,
        tv_distance,
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=False,
    )


@register
class TVLoss(SoftTargetObjective):
    """:func:`tv_loss` as the training loop calls it: ``{"tv", "hard"}`` terms.

    Args:
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
    """

    name = NAME
    term = TERM
    divergence = staticmethod(tv_distance)

    def __init__(self, temperature: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__(temperature, alpha)  # no standardize: see tv_loss
