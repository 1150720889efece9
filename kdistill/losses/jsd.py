"""Generalised Jensen-Shannon distillation, JSD(beta) of GKD (Agarwal et al., ICLR 2024)."""

from __future__ import annotations

from functools import partial

from torch import Tensor

from kdistill.losses.logit_utils import (
    SoftTargetObjective,
    check_open_unit,
    kl_per_example,
    log_mixture,
    soft_target_loss,
    soft_target_terms,
)
from kdistill.losses.registry import register

NAME = "jsd"
TERM = "jsd"
JSD_BETA_HINT = (
    "; JSD(beta) is 0 at beta = 0 and 1: use --loss hinton (forward KL) or reverse-kl there"
)


def check_jsd_beta(beta: float) -> float:
    """Return ``beta`` as a float, or raise if it is not in (0, 1)."""
    return check_open_unit("beta", beta, "the teacher's weight in JSD(beta)", JSD_BETA_HINT)


def jsd_divergence(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    r"""Generalised JSD of each row: ``beta KL(P || M) + (1 - beta) KL(Q || M)``.

    With ``M = beta P + (1 - beta) Q``; ``P`` is the teacher and ``Q`` the student in
    :func:`jsd_loss`.

    Args:
        log_p: ``(B, C)`` log-probabilities of P.
        log_q: ``(B, C)`` log-probabilities of Q.
        beta: in (0, 1).

    Returns:
        ``(B,)``.
    """
    log_m = log_mixture(log_p, log_q, beta)
    return beta * kl_per_example(log_p, log_m) + (1 - beta) * kl_per_example(log_q, log_m)


def jsd_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    beta: float,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`jsd_loss`, without validation (the hot path).

    Returns:
        ``{"jsd": alpha T^2 JSD_beta(p_t || p_s), "hard": (1 - alpha) CE}``, without a term whose
        weight is 0.
    """
    return soft_target_terms(
        TERM,
        partial(jsd_divergence, beta=beta),
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


def jsd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    alpha: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    r"""Distillation with the generalised Jensen-Shannon divergence JSD(beta).

    From Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes" (GKD), ICLR 2024:

    .. math::
        \mathrm{JSD}_\beta(P \| Q) = \beta\,\mathrm{KL}(P \| M) + (1-\beta)\,\mathrm{KL}(Q \| M),
        \qquad M = \beta P + (1 - \beta) Q

    with the **teacher as P** and the student as Q, both ``softmax(logits / T)``. The loss is

    .. math::
        \alpha T^2 \, \frac{1}{B}\sum_b \mathrm{JSD}_\beta(p_b \| q_b)
        + (1 - \alpha)\, \mathrm{CE}(z, y)

    **Limits.** ``JSD_beta`` itself tends to 0 at both ends, as ``beta KL(P || Q) + O(beta^2)``
    near 0 and ``(1 - beta) KL(Q || P) + O((1 - beta)^2)`` near 1, so

    .. math::
        \lim_{\beta \to 0} \frac{\mathrm{JSD}_\beta(P\|Q)}{\beta} = \mathrm{KL}(P \| Q)
        \ \text{(forward KL, teacher first)}, \qquad
        \lim_{\beta \to 1} \frac{\mathrm{JSD}_\beta(P\|Q)}{1-\beta} = \mathrm{KL}(Q \| P)
        \ \text{(reverse KL)}

    (both when P and Q have full support, as softmaxes do). This is why small beta "behaves
    like" the forward KL and beta near 1 like the reverse KL, but only after dividing by beta or
    ``1 - beta``: the loss's scale shrinks towards both ends, so alpha or the learning rate must
    grow to compensate. The value is bounded: ``0 <= JSD_beta <= h(beta)``, the binary entropy
    ``-beta log beta - (1 - beta) log(1 - beta)`` (``log 2`` at beta = 1/2).

    Same value as TRL's ``GKDTrainer.generalized_jsd_loss`` (teacher first, ``beta`` weighs the
    teacher in M and ``KL(teacher || M)``) at T = 1 for ``0 < beta < 1``; TRL has no ``T^2`` and,
    at exactly ``beta = 0`` or ``1``, *switches* to the forward or reverse KL (a discontinuity:
    its value jumps from about 0 to the KL). Here beta must be in (0, 1): use ``hinton`` or
    ``reverse-kl`` for the end points. DistiLLM's ``js_distance(lam)`` is ``jsd`` with
    ``beta = 1 - lam`` (its ``lam`` weighs the student).

    ``T^2`` scales the soft term as in the ``hinton`` loss, and ``alpha`` weighs the soft term
    as there.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble, whose distribution is the
            mean of its members' probabilities at T.
        labels: ``(B,)`` class indices; needed unless ``alpha == 1``.
        beta: weight of the teacher in the mixture M and of ``KL(teacher || M)``, in (0, 1).
            Default: 0.5 (the symmetric JSD; TRL's default).
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]; the hard-label cross-entropy gets
            ``1 - alpha``. Default: 1 (soft term only, as ``hinton``).
        standardize: z-score both logit vectors first (logit standardisation, Sun et al. 2024).
            Default: False.

    Returns:
        A scalar tensor.
    """
    return soft_target_loss(
        NAME,
        TERM,
        partial(jsd_divergence, beta=check_jsd_beta(beta)),
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


@register
class JSDLoss(SoftTargetObjective):
    """:func:`jsd_loss` as the training loop calls it: ``{"jsd", "hard"}`` terms.

    Args:
        beta: the teacher's weight in JSD(beta), in (0, 1). Default: 0.5.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    name = NAME
    term = TERM

    def __init__(
        self,
        beta: float = 0.5,
        temperature: float = 1.0,
        alpha: float = 1.0,
        standardize: bool = False,
    ) -> None:
        beta = check_jsd_beta(beta)
        super().__init__(temperature, alpha, standardize)
        self.beta = beta

    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """JSD(beta) of each example, the teacher as P."""
        return jsd_divergence(log_p, log_q, self.beta)
