"""Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022): TCKD and NCKD weighted apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.losses.base import DistillationObjective, sum_terms
from kdistill.losses.logit_utils import (
    check_count,
    check_flag,
    check_inputs,
    check_temperature,
    check_weight,
    kl_per_example,
    student_log_probs,
    teacher_log_probs,
)
from kdistill.losses.registry import register


def decoupled_kl(log_p: Tensor, log_q: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    r"""The two parts of ``KL(p || q)`` that DKD separates, for each example.

    With the target class ``t = labels[b]``, the binary distributions
    ``b^p = [p_t, 1 - p_t]`` and ``b^q = [q_t, 1 - q_t]``, and the distributions over the
    non-target classes renormalised, ``\hat p_j = p_j / (1 - p_t)`` (``j != t``):

    .. math::
        \mathrm{TCKD} = \mathrm{KL}(b^p \| b^q), \qquad
        \mathrm{NCKD} = \mathrm{KL}(\hat p \| \hat q), \qquad
        \mathrm{KL}(p \| q) = \mathrm{TCKD} + (1 - p_t)\,\mathrm{NCKD}

    Everything is computed from log-probabilities (``log(1 - p_t)`` as the logsumexp of the
    non-target log-probabilities), so it stays exact when ``p_t`` is close to 1.

    Args:
        log_p: ``(B, C)`` log-probabilities of the teacher, ``C >= 2``.
        log_q: ``(B, C)`` log-probabilities of the student.
        labels: ``(B,)`` target classes.

    Returns:
        ``(tckd, nckd)``, each ``(B,)``.
    """
    batch, classes = log_p.shape
    target = labels.long().unsqueeze(1)
    # The non-target classes of each row, in order: j, or j + 1 from the target on (no sync).
    index = torch.arange(classes - 1, device=log_p.device).expand(batch, classes - 1)
    others = index + (index >= target).long()

    def split(log_probs: Tensor) -> tuple[Tensor, Tensor]:
        non_target = log_probs.gather(1, others)
        log_rest = torch.logsumexp(non_target, dim=1, keepdim=True)  # log(1 - p_t)
        binary = torch.cat((log_probs.gather(1, target), log_rest), dim=1)
        return binary, non_target - log_rest

    binary_p, renormalised_p = split(log_p)
    binary_q, renormalised_q = split(log_q)
    return kl_per_example(binary_p, binary_q), kl_per_example(renormalised_p, renormalised_q)


def dkd_warmup_factor(epoch: int, warmup: int) -> float:
    """The weight of the KD terms in ``epoch`` (0-based) with a linear warm-up over ``warmup``.

    ``min((epoch + 1) / warmup, 1)``, i.e. the official code's ``min(epoch / warmup, 1)`` with its
    1-based epochs: ``1 / warmup`` in the first epoch, 1 from epoch ``warmup`` on; 1 throughout
    when ``warmup == 0``.
    """
    return 1.0 if warmup == 0 else min((epoch + 1) / warmup, 1.0)


def dkd_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
    ce_weight: float,
    standardize: bool,
    warmup_factor: float = 1.0,
) -> dict[str, Tensor]:
    """The weighted terms of :func:`dkd_loss`, without validation (the hot path).

    Returns:
        ``{"tckd": w alpha T^2 TCKD, "nckd": w beta T^2 NCKD, "hard": ce_weight CE}`` with the
        warm-up factor ``w``, without a term whose weight is 0.
    """
    terms = {}
    if alpha > 0 or beta > 0:
        log_q = student_log_probs(student_logits, temperature, standardize)
        log_p = teacher_log_probs(teacher_logits, temperature, standardize)
        tckd, nckd = decoupled_kl(log_p, log_q, labels)
        scale = warmup_factor * temperature**2
        if alpha > 0:
            terms["tckd"] = scale * alpha * tckd.mean()
        if beta > 0:
            terms["nckd"] = scale * beta * nckd.mean()
    if ce_weight > 0:
        terms["hard"] = ce_weight * F.cross_entropy(student_logits, labels)
    return terms


def check_dkd_arguments(
    alpha: float, beta: float, temperature: float, ce_weight: float, warmup: int, standardize: bool
) -> tuple[float, float, float, float, int, bool]:
    """Validate DKD's hyper-parameters (one-line errors); return them as float/int/bool."""
    alpha = check_weight("alpha", alpha, "the weight of TCKD, the target-class term")
    beta = check_weight("beta", beta, "the weight of NCKD, the non-target-class term")
    temperature = check_temperature(temperature)
    ce_weight = check_weight("ce_weight", ce_weight, "the weight of the hard-label term")
    warmup = check_count("warmup", warmup, "epochs of linear warm-up of the KD terms")
    standardize = check_flag("standardize", standardize)
    if alpha == beta == ce_weight == 0:
        raise KDistillError("dkd: alpha, beta and ce_weight are all 0, so the loss would be 0")
    return alpha, beta, temperature, ce_weight, warmup, standardize


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    standardize: bool = False,
    warmup_factor: float = 1.0,
) -> Tensor:
    r"""Decoupled knowledge distillation (DKD).

    From Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022,
    section 3. The classical KD loss splits exactly into a target-class part and a
    non-target-class part (see :func:`decoupled_kl`),

    .. math::
        \mathrm{KL}(p \| q) = \mathrm{TCKD} + (1 - p_t)\,\mathrm{NCKD},

    where the teacher's confidence ``p_t`` in the true class *suppresses* NCKD exactly on the
    well-predicted examples whose "dark knowledge" is most useful. DKD drops that coupling and
    weighs the two parts freely:

    .. math::
        \mathrm{ce\_weight} \cdot \mathrm{CE}(z, y)
        + w \, T^2 \big(\alpha\,\overline{\mathrm{TCKD}} + \beta\,\overline{\mathrm{NCKD}}\big)

    with ``p = softmax(v / T)``, ``q = softmax(z / T)``, the batch mean ``\overline{\cdot}`` and
    the warm-up factor ``w`` (the paper's linear warm-up of the KD terms, see
    :func:`dkd_warmup_factor`; the ``dkd`` objective sets it each epoch). Both parts are scaled
    by ``T^2``, as in the official code (mdistiller's ``dkd_loss``), whose value this equals
    (it removes the target class with a ``-1000`` logit offset rather than exactly).

    With ``alpha = beta = 1`` DKD is *not* KD (NCKD is no longer multiplied by ``1 - p_t``);
    KD is recovered only as ``TCKD + (1 - p_t) NCKD`` per example.

    Defaults are the paper's CIFAR-100 setting (alpha 1, beta 8, T 4, CE weight 1, 20 warm-up
    epochs); on ImageNet it used beta 0.5 and T 1. Needs the labels (the target class), and at
    least 2 classes.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble, whose distribution is the
            mean of its members' probabilities at T (TCKD and NCKD are then those of the mean).
        labels: ``(B,)`` class indices (the target class of each example).
        alpha: weight of TCKD, >= 0. Default: 1.
        beta: weight of NCKD, >= 0. Default: 8.
        temperature: T > 0. Default: 4.
        ce_weight: weight of the hard-label cross-entropy (raw logits), >= 0. Default: 1.
        standardize: z-score both logit vectors first (logit standardisation, Sun et al. 2024).
            Default: False.
        warmup_factor: ``w`` in [0, 1], multiplies both KD terms. Default: 1.

    Returns:
        A scalar tensor.
    """
    alpha, beta, temperature, ce_weight, _, standardize = check_dkd_arguments(
        alpha, beta, temperature, ce_weight, 0, standardize
    )
    w = float(warmup_factor)
    if not 0.0 <= w <= 1.0:
        raise KDistillError(f"dkd: warmup_factor must be in [0, 1], got {warmup_factor!r}")
    check_inputs(
        student_logits, teacher_logits, labels, loss="dkd", needs_labels=True, label_range=True
    )
    terms = dkd_terms(
        student_logits,
        teacher_logits,
        labels,
        alpha=alpha,
        beta=beta,
        temperature=temperature,
        ce_weight=ce_weight,
        standardize=standardize,
        warmup_factor=w,
    )
    return sum_terms(terms)


@register
class DKDLoss(DistillationObjective):
    """:func:`dkd_loss` as the training loop calls it: ``{"tckd", "nckd", "hard"}`` terms.

    The KD terms are warmed up linearly over the first ``warmup`` epochs, as in the paper and
    the official code: :meth:`on_epoch` sets their weight to ``min((epoch + 1) / warmup, 1)``
    (see :func:`dkd_warmup_factor`). Until the loop first calls it, the weight is that of the
    first epoch.

    Args:
        alpha: weight of TCKD, >= 0. Default: 1.
        beta: weight of NCKD, >= 0. Default: 8.
        temperature: T > 0. Default: 4.
        ce_weight: weight of the hard-label cross-entropy, >= 0. Default: 1.
        warmup: epochs of linear warm-up of the KD terms, an integer >= 0 (0: none).
            Default: 20.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    name = "dkd"
    supports_ensemble = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        warmup: int = 20,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        checked = check_dkd_arguments(alpha, beta, temperature, ce_weight, warmup, standardize)
        self.alpha, self.beta, self.temperature, self.ce_weight = checked[:4]
        self.warmup, self.standardize = checked[4:]
        self.warmup_factor = dkd_warmup_factor(0, self.warmup)

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Set the warm-up weight of the KD terms for ``epoch`` (0-based)."""
        self.warmup_factor = dkd_warmup_factor(epoch, self.warmup)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The weighted terms of a batch."""
        check_inputs(student_logits, teacher_logits, labels, loss=self.name, needs_labels=True)
        return dkd_terms(
            student_logits,
            teacher_logits,
            labels,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            ce_weight=self.ce_weight,
            standardize=self.standardize,
            warmup_factor=self.warmup_factor,
        )
