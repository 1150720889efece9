"""DIST (Huang et al., NeurIPS 2022): match the teacher's relations, not its exact probabilities."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.losses.base import DistillationObjective, sum_terms
from kdistill.losses.logit_utils import (
    check_inputs,
    check_label_range,
    check_temperature,
    check_weight,
    student_log_probs,
    teacher_log_probs,
)
from kdistill.losses.registry import register

DIST_EPS = 1e-8
"""Added to the product of the norms in the Pearson correlation, as in the official code."""


def pearson_rows(a: Tensor, b: Tensor, eps: float = DIST_EPS) -> Tensor:
    r"""Pearson correlation of each row of ``a`` with the same row of ``b``.

    .. math::
        \rho(a, b) = \frac{\sum_k (a_k - \bar a)(b_k - \bar b)}
        {\lVert a - \bar a \rVert \, \lVert b - \bar b \rVert + \epsilon}

    Args:
        a: ``(N, K)``.
        b: ``(N, K)``.
        eps: added to the denominator (the official code's 1e-8); a constant row then has
            correlation 0 instead of NaN.

    Returns:
        ``(N,)``.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(dim=1) / (norms + eps)


def dist_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    beta: float,
    gamma: float,
    temperature: float,
    ce_weight: float,
    eps: float = DIST_EPS,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`dist_loss`, without validation (the hot path).

    Returns:
        ``{"inter": beta tau^2 L_inter, "intra": gamma tau^2 L_intra, "hard": ce_weight CE}``,
        without a term whose weight is 0.
    """
    terms = {}
    if beta > 0 or gamma > 0:
        y_s = student_log_probs(student_logits, temperature, False).exp()
        y_t = teacher_log_probs(teacher_logits, temperature, False).exp()
        scale = temperature**2
        if beta > 0:
            terms["inter"] = beta * scale * (1 - pearson_rows(y_s, y_t, eps).mean())
        if gamma > 0:
            terms["intra"] = gamma * scale * (1 - pearson_rows(y_s.T, y_t.T, eps).mean())
    if ce_weight > 0:
        terms["hard"] = ce_weight * F.cross_entropy(student_logits, labels)
    return terms


def check_dist_arguments(
    beta: float, gamma: float, temperature: float, ce_weight: float, eps: float = DIST_EPS
) -> tuple[float, float, float, float, float]:
    """Validate DIST's hyper-parameters (one-line errors); return them as floats."""
    beta = check_weight("beta", beta, "the weight of the inter-class relation")
    gamma = check_weight("gamma", gamma, "the weight of the intra-class relation")
    temperature = check_temperature(temperature)
    ce_weight = check_weight("ce_weight", ce_weight, "the weight of the hard-label term")
    eps = check_weight("eps", eps, "added to the correlation's denominator")
    if beta == gamma == ce_weight == 0:
        raise KDistillError("dist: beta, gamma and ce_weight are all 0, so the loss would be 0")
    return beta, gamma, temperature, ce_weight, eps


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 1.0,
    eps: float = DIST_EPS,
) -> Tensor:
    r"""DIST: distillation by correlation of the predictions.

    From Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher",
    NeurIPS 2022. With the prediction matrices ``Y^s = softmax(z / tau)`` and
    ``Y^t = softmax(v / tau)`` (``B x C``, one row per example) and the Pearson correlation
    ``rho`` (:func:`pearson_rows`):

    .. math::
        L_\mathrm{inter} = 1 - \frac{1}{B}\sum_{b} \rho(Y^s_{b,:}, Y^t_{b,:}), \qquad
        L_\mathrm{intra} = 1 - \frac{1}{C}\sum_{c} \rho(Y^s_{:,c}, Y^t_{:,c})

    .. math::
        \mathrm{ce\_weight}\cdot\mathrm{CE}(z, y) + \tau^2 (\beta L_\mathrm{inter}
        + \gamma L_\mathrm{intra})

    The inter-class relation asks each example's student probabilities to be *linearly
    related* to the teacher's (a Pearson correlation is invariant to a shift and a positive
    scale of either vector), not equal to them; the intra-class relation asks, for each class,
    the ranking of the batch's examples by that class's probability to match. So a student much
    weaker than its teacher is not forced to copy a sharpness it cannot reach (the paper's
    "stronger teacher" setting).

    What the official code does (``hunto/image_classification_sota``,
    ``lib/models/losses/dist_kd.py``, also mdistiller-style ports): softmax of both logits at
    ``tau``; the Pearson correlation as the cosine similarity of the mean-centred vectors, with
    ``eps = 1e-8`` added to the product of the norms; both relations multiplied by ``tau^2``
    (its earlier versions have no temperature, i.e. ``tau = 1``); ``beta * inter + gamma *
    intra``, to which the training script adds the hard-label cross-entropy. Defaults are the
    official code's, ``beta = gamma = tau = 1``; this equals its value.

    **Batch dependence.** The intra-class term correlates across the batch, so the loss of an
    example depends on the rest of its batch, and a batch of one example has ``L_intra = 1``
    with no gradient. Keep batches well above one example.

    **Ensemble teacher.** The method does not define one; here ``Y^t`` is the mean of the
    members' probabilities at ``tau`` (the distribution the other losses distil from).

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble (mean of the members'
            probabilities).
        labels: ``(B,)`` class indices; needed unless ``ce_weight == 0``.
        beta: weight of the inter-class relation, >= 0. Default: 1.
        gamma: weight of the intra-class relation, >= 0. Default: 1.
        temperature: tau > 0. Default: 1.
        ce_weight: weight of the hard-label cross-entropy (raw logits), >= 0. Default: 1.
        eps: added to the correlation's denominator; 0 is the paper's exact correlation.
            Default: 1e-8. Not always negligible: a class whose probabilities are tiny across
            the whole batch has a centred norm product comparable to it (a perfect match then
            scores slightly above 0).

    Returns:
        A scalar tensor.
    """
    beta, gamma, temperature, ce_weight, eps = check_dist_arguments(
        beta, gamma, temperature, ce_weight, eps
    )
    check_inputs(student_logits, teacher_logits, labels, loss="dist", needs_labels=ce_weight > 0)
    if ce_weight > 0:
        check_label_range(labels, student_logits.shape[-1])
    terms = dist_terms(
        student_logits,
        teacher_logits,
        labels,
        beta=beta,
        gamma=gamma,
        temperature=temperature,
        ce_weight=ce_weight,
        eps=eps,
    )
    return sum_terms(terms)


@register
class DISTLoss(DistillationObjective):
    """:func:`dist_loss` as the training loop calls it: ``{"inter", "intra", "hard"}`` terms.

    Args:
        beta: weight of the inter-class relation, >= 0. Default: 1.
        gamma: weight of the intra-class relation, >= 0. Default: 1.
        temperature: tau > 0. Default: 1.
        ce_weight: weight of the hard-label cross-entropy, >= 0. Default: 1.
        eps: added to the correlation's denominator. Default: 1e-8 (the official code's).
    """

    name = "dist"
    supports_ensemble = True

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        ce_weight: float = 1.0,
        eps: float = DIST_EPS,
    ) -> None:
        super().__init__()
        checked = check_dist_arguments(beta, gamma, temperature, ce_weight, eps)
        self.beta, self.gamma, self.temperature, self.ce_weight, self.eps = checked

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The weighted terms of a batch."""
        check_inputs(
            student_logits, teacher_logits, labels, loss=self.name, needs_labels=self.ce_weight > 0
        )
        return dist_terms(
            student_logits,
            teacher_logits,
            labels,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.temperature,
            ce_weight=self.ce_weight,
            eps=self.eps,
        )
