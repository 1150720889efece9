"""Skew KL and skew reverse KL distillation (Ko et al., ICML 2024, DistiLLM)."""

from __future__ import annotations

from torch import Tensor

from kdistill.losses.logit_utils import (
    Divergence,
    SoftTargetObjective,
    check_half_open_unit,
    kl_per_example,
    log_mixture,
    soft_target_loss,
    soft_target_terms,
)
from kdistill.losses.registry import register

SKEW_HINT = "; at skew = 1 the divergence is identically 0"


def skew_kl_divergence(log_p: Tensor, log_q: Tensor, skew: float) -> Tensor:
    r"""``KL(P || skew P + (1 - skew) Q)`` of each row, for ``0 <= skew < 1``.

    Args:
        log_p: ``(B, C)`` log-probabilities of P (the teacher in :func:`skew_kl_loss`).
        log_q: ``(B, C)`` log-probabilities of Q (the student).
        skew: the weight of P in the mixture; 0 gives ``KL(P || Q)`` exactly.

    Returns:
        ``(B,)``.
    """
    log_mix = log_q if skew == 0 else log_mixture(log_p, log_q, skew)
    return kl_per_example(log_p, log_mix)


def skew_divergence(skew: float, reverse: bool) -> tuple[str, Divergence]:
    """The soft term's name and divergence of the skew KL, or of the skew reverse KL."""
    if reverse:
        return "skew_reverse_kl", lambda log_p, log_q: skew_kl_divergence(log_q, log_p, skew)
    return "skew_kl", lambda log_p, log_q: skew_kl_divergence(log_p, log_q, skew)


def skew_kl_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    skew: float,
    reverse: bool,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`skew_kl_loss` / :func:`skew_reverse_kl_loss`, unvalidated.

    Returns:
        ``{"skew_kl": ...}`` (or ``"skew_reverse_kl"``) and ``{"hard": (1 - alpha) CE}``, without a
        term whose weight is 0.
    """
    return soft_target_terms(
        *skew_divergence(skew, reverse),
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


def skew_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    skew: float = 0.1,
    temperature: float = 1.0,
    alpha: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    r"""Skew KL distillation: the forward KL against a mixture that leans towards the teacher.

    From Ko et al., "DistiLLM: Towards Streamlined Distillation for Large Language Models",
    ICML 2024, section 3 (their skew ratio alpha, here ``skew`` = lambda):

    .. math::
        \mathrm{SKL}_\lambda(p \| q) = \mathrm{KL}\big(p \,\|\, \lambda p + (1 - \lambda) q\big)

    with the teacher's ``p = softmax(v / T)`` and the student's ``q = softmax(z / T)``, and the
    loss ``alpha T^2 mean_b SKL + (1 - alpha) CE(z, y)``.

    Mixing a little of the teacher into the student's side bounds the log-ratio,
    ``SKL_lambda <= -log(lambda)``, so examples where the student gives the teacher's classes
    almost no mass cannot blow up the loss or its gradient (the paper's motivation: stabler
    optimisation with student-generated outputs). ``skew = 0`` is the forward KL of Hinton et
    al. (2015) exactly; the gradient with respect to the student shrinks by ``(1 - lambda)``
    near the optimum.

    DistiLLM's ``skewed_forward_kl(lam)`` uses the same mixture (``lam`` weighs the teacher) at
    T = 1 but returns the cross-entropy ``-sum p log(mixture)``, which exceeds this KL by the
    teacher's entropy (a constant: same gradient, different value). ``T^2`` scales the soft term
    as in the ``hinton`` loss, and ``alpha`` weighs the soft term as there.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble, whose distribution is the
            mean of its members' probabilities at T.
        labels: ``(B,)`` class indices; needed unless ``alpha == 1``.
        skew: lambda in [0, 1), the teacher's weight in the mixture. Default: 0.1 (DistiLLM's).
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]; the hard-label cross-entropy gets
            ``1 - alpha``. Default: 1 (soft term only, as ``hinton``).
        standardize: z-score both logit vectors first (logit standardisation, Sun et al. 2024).
            Default: False.

    Returns:
        A scalar tensor.
    """
    return _skew_loss(
        "skew-kl", student_logits, teacher_logits, labels, skew, False, temperature, alpha,
        standardize,
    )  # fmt: skip


def skew_reverse_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    skew: float = 0.1,
    temperature: float = 1.0,
    alpha: float = 1.0,
    standardize: bool = False,
) -> Tensor:
    r"""Skew reverse KL distillation: the reverse KL against a mixture leaning to the student.

    From Ko et al. (DistiLLM, ICML 2024), section 3:

    .. math::
        \mathrm{SRKL}_\lambda(q \| p) = \mathrm{KL}\big(q \,\|\, (1 - \lambda) p + \lambda q\big)

    with the student's ``q`` first; ``skew`` = lambda weighs the *student* in the mixture (as
    in DistiLLM's ``skewed_reverse_kl(lam)``, whose value this equals at T = 1). ``skew = 0``
    is the reverse KL :func:`~kdistill.losses.reverse_kl.reverse_kl_loss` exactly, and
    ``SRKL_lambda <= -log(lambda)``. ``T^2`` and ``alpha`` as in :func:`skew_kl_loss`.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble (mean of the members'
            probabilities at T).
        labels: ``(B,)`` class indices; needed unless ``alpha == 1``.
        skew: lambda in [0, 1), the student's weight in the mixture. Default: 0.1.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: z-score both logit vectors first. Default: False.

    Returns:
        A scalar tensor.
    """
    return _skew_loss(
        "skew-reverse-kl", student_logits, teacher_logits, labels, skew, True, temperature,
        alpha, standardize,
    )  # fmt: skip


def check_skew(skew: float) -> float:
    """Return ``skew`` as a float, or raise if it is not in [0, 1)."""
    return check_half_open_unit("skew", skew, "the skew KL's mixing weight lambda", SKEW_HINT)


def _skew_loss(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    skew: float,
    reverse: bool,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> Tensor:
    return soft_target_loss(
        name,
        *skew_divergence(check_skew(skew), reverse),
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )


class _SkewObjective(SoftTargetObjective):
    reverse: bool

    def __init__(
        self,
        skew: float = 0.1,
        temperature: float = 1.0,
        alpha: float = 1.0,
        standardize: bool = False,
    ) -> None:
        skew = check_skew(skew)
        super().__init__(temperature, alpha, standardize)
        self.skew = skew

    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """The skew KL of each example, of the student's ``log_q`` first when ``reverse``."""
        first, second = (log_q, log_p) if self.reverse else (log_p, log_q)
        return skew_kl_divergence(first, second, self.skew)


@register
class SkewKLLoss(_SkewObjective):
    """:func:`skew_kl_loss` as the training loop calls it: ``{"skew_kl", "hard"}`` terms.

    Args:
        skew: lambda in [0, 1), the teacher's weight in the mixture. Default: 0.1.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    name = "skew-kl"
    term = "skew_kl"
    reverse = False


@register
class SkewReverseKLLoss(_SkewObjective):
    """:func:`skew_reverse_kl_loss` as the loop calls it: ``{"skew_reverse_kl", "hard"}`` terms.

    Args:
        skew: lambda in [0, 1), the student's weight in the mixture. Default: 0.1.
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    name = "skew-reverse-kl"
    term = "skew_reverse_kl"
    reverse = True
