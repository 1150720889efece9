"""Shared pieces of the logit-distillation losses: argument checks, soft targets, the skeleton.

Every loss of the logit family (``dkd``, ``dist``, ``reverse-kl``, ``jsd``, ``tv``, ``skew-kl``,
``skew-reverse-kl``) validates its hyper-parameters with the ``check_*`` functions here (one-line
:class:`~kdistill.errors.KDistillError`) and turns logits into (log-)probabilities with
:func:`student_log_probs` and :func:`teacher_log_probs`, so that temperature, logit
standardisation and teacher ensembles mean the same thing in all of them.

The losses of the form ``alpha T^2 mean_b D(p_t, p_s) + (1 - alpha) CE`` (``reverse-kl``,
``jsd``, ``tv``, ``skew-kl``, ``skew-reverse-kl``) define only their divergence ``D``: the rest
(validation of temperature, alpha and standardize, the weighting, the hard term, ensembles) is
:func:`soft_target_loss` for the functional form and :class:`SoftTargetObjective` for the
registered loss, both computing :func:`soft_target_terms`. ``hinton`` shares the weighting
(:func:`soft_and_hard_terms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.losses.base import DistillationObjective, sum_terms
from kdistill.losses.standardize import standardize_logits

Divergence = Callable[[Tensor, Tensor], Tensor]
"""``D(log_p, log_q)``: teacher and student log-probabilities ``(B, C)`` -> ``(B,)``."""


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise if it is not a finite number > 0."""
    t = _as_float("temperature", temperature)
    if not math.isfinite(t) or t <= 0:
        raise KDistillError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` (the weight of the soft term) as a float, or raise if outside [0, 1]."""
    a = _as_float("alpha", alpha)
    if not 0.0 <= a <= 1.0:
        raise KDistillError(
            f"alpha (the weight of the soft-target term) must be in [0, 1], got {alpha!r}"
        )
    return a


def check_weight(name: str, value: float, meaning: str) -> float:
    """Return a loss-term weight as a float, or raise if it is not a finite number >= 0.

    Args:
        name: the argument's name, as the user writes it.
        value: the weight.
        meaning: what it weighs, for the message (e.g. ``"the weight of NCKD"``).
    """
    v = _as_float(name, value)
    if not math.isfinite(v) or v < 0:
        raise KDistillError(f"{name} ({meaning}) must be a finite number >= 0, got {value!r}")
    return v


def check_open_unit(name: str, value: float, meaning: str, hint: str = "") -> float:
    """Return ``value`` as a float, or raise if it is not strictly between 0 and 1.

    Args:
        name: the argument's name.
        value: the number to check.
        meaning: what it is, for the message.
        hint: appended to the message (e.g. which loss to use at an excluded end point).
    """
    v = _as_float(name, value)
    if not 0.0 < v < 1.0:
        raise KDistillError(f"{name} ({meaning}) must be in (0, 1), got {value!r}{hint}")
    return v


def check_half_open_unit(name: str, value: float, meaning: str, hint: str = "") -> float:
    """Return ``value`` as a float, or raise if it is not in ``[0, 1)``."""
    v = _as_float(name, value)
    if not 0.0 <= v < 1.0:
        raise KDistillError(f"{name} ({meaning}) must be in [0, 1), got {value!r}{hint}")
    return v


def check_soft_target_arguments(
    temperature: float, alpha: float, standardize: bool
) -> tuple[float, float, bool]:
    """Validate a soft-target loss's temperature, alpha and standardize, in that order."""
    temperature = check_temperature(temperature)
    return temperature, check_alpha(alpha), check_flag("standardize", standardize)


def check_flag(name: str, value: bool) -> bool:
    """Return ``value``, or raise if it is not a bool (``true``/``false`` on the command line)."""
    if not isinstance(value, bool):
        raise KDistillError(f"{name} must be true or false, got {value!r}")
    return value


def check_count(name: str, value: int, meaning: str) -> int:
    """Return ``value``, or raise if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KDistillError(f"{name} ({meaning}) must be an integer >= 0, got {value!r}")
    return value


def check_inputs(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor | None,
    *,
    loss: str,
    needs_labels: bool,
    supports_ensemble: bool = True,
    label_range: bool = False,
) -> None:
    """Raise a one-line error when logits or labels cannot be used by a logit loss.

    Checks shapes and dtypes only (no device synchronisation, so it is cheap on every step),
    unless ``label_range``.

    Args:
        student_logits: ``(B, C)`` floating point, ``C >= 2``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble of M members.
        labels: ``(B,)`` integer class indices, or None when no term needs them.
        loss: the loss's name, for the messages.
        needs_labels: whether some term of the loss (hard-label CE, DKD) uses the labels.
        supports_ensemble: whether ``(M, B, C)`` teacher logits are accepted.
        label_range: when the labels are needed, also check that they are in ``[0, C)``
            (:func:`check_label_range`, which synchronises; the functional forms do).
    """
    if not isinstance(student_logits, Tensor) or student_logits.dim() != 2:
        shape = tuple(student_logits.shape) if isinstance(student_logits, Tensor) else None
        raise KDistillError(f"{loss}: student logits must be (batch, classes), got shape {shape}")
    if not student_logits.dtype.is_floating_point:
        raise KDistillError(
            f"{loss}: student logits must be floating point, got dtype {student_logits.dtype}"
        )
    batch, classes = student_logits.shape
    if classes < 2:
        raise KDistillError(f"{loss}: logits need at least 2 classes, got {classes}")
    if teacher_logits is None:
        raise KDistillError(f"{loss} distils from a teacher: teacher logits are needed")
    if teacher_logits.dim() == 3 and not supports_ensemble:
        raise KDistillError(
            f"{loss} does not support a teacher ensemble (got logits of shape "
            f"{tuple(teacher_logits.shape)}); distil from one teacher or use another loss"
        )
    if teacher_logits.dim() not in (2, 3) or teacher_logits.shape[-2] != batch:
        raise KDistillError(
            f"{loss}: teacher logits must be (batch, classes) = ({batch}, {classes}) or "
            f"(members, {batch}, {classes}), got shape {tuple(teacher_logits.shape)}"
        )
    if teacher_logits.shape[-1] != classes:
        raise KDistillError(
            f"{loss}: teacher has {teacher_logits.shape[-1]} classes but student has {classes}: "
            "both must predict the same classes"
        )
    if teacher_logits.dim() == 3 and teacher_logits.shape[0] == 0:
        raise KDistillError(f"{loss}: a teacher ensemble needs at least one member")
    if needs_labels:
        if labels is None:
            raise KDistillError(f"{loss}: labels are needed (hard-label or target-class term)")
        if labels.shape != (batch,):
            raise KDistillError(
                f"{loss}: labels must have shape ({batch},), got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise KDistillError(
                f"{loss}: labels must be integer class indices, got dtype {labels.dtype}"
            )
        if label_range:
            check_label_range(labels, classes)


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Raise if ``labels`` are outside ``[0, num_classes)`` (synchronises with the device)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise KDistillError(
            f"labels must be in [0, {num_classes}), got values from {int(labels.min())} "
            f"to {int(labels.max())}"
        )


def student_log_probs(student_logits: Tensor, temperature: float, standardize: bool) -> Tensor:
    """``log softmax(z / T)`` of the student, of its standardised logits when ``standardize``.

    Args:
        student_logits: ``(B, C)``.
        temperature: T > 0 (with ``standardize``, the base temperature).
        standardize: z-score each logit vector first (:func:`standardize_logits`).
    """
    if standardize:
        student_logits = standardize_logits(student_logits)
    return F.log_softmax(student_logits / temperature, dim=-1)


def teacher_log_probs(teacher_logits: Tensor, temperature: float, standardize: bool) -> Tensor:
    """Log of the teacher's soft targets ``softmax(v / T)``, for one teacher or an ensemble.

    An ensemble ``(M, B, C)`` gives the log of the *mean of its members' probabilities*
    (computed stably as ``logsumexp_m log p_m - log M``), the teacher distribution of Hinton et
    al. (2015). With ``standardize`` each member's logit vector is standardised on its own
    before its softmax (each member has its own logit scale, which is what standardisation
    removes), and then the probabilities are averaged.

    Args:
        teacher_logits: ``(B, C)`` or ``(M, B, C)``.
        temperature: T > 0 (with ``standardize``, the base temperature).
        standardize: z-score each logit vector first (:func:`standardize_logits`).

    Returns:
        ``(B, C)`` log-probabilities.
    """
    if standardize:
        teacher_logits = standardize_logits(teacher_logits)
    log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    if log_probs.dim() == 3:
        log_probs = torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])
    return log_probs


def kl_per_example(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""``KL(p || q) = sum_c p_c (log p_c - log q_c)`` of each row, from log-probabilities.

    Args:
        log_p: ``(B, C)`` log-probabilities of the first distribution (the expectation's).
        log_q: ``(B, C)`` log-probabilities of the second.

    Returns:
        ``(B,)``.
    """
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)


def log_mixture(log_p: Tensor, log_q: Tensor, weight_p: float) -> Tensor:
    """``log(w p + (1 - w) q)`` computed stably from log-probabilities, for ``0 < w < 1``."""
    return torch.logsumexp(
        torch.stack((log_p + math.log(weight_p), log_q + math.log1p(-weight_p))), dim=0
    )


def soft_and_hard_terms(
    term: str,
    soft: Callable[[], Tensor],
    student_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> dict[str, Tensor]:
    """``{term: alpha T^2 soft(), "hard": (1 - alpha) CE(z, y)}``, the terms of a soft-target loss.

    A term of weight 0 is left out and its work is not done: ``soft`` (the unweighted soft term,
    a scalar) is called only when alpha > 0, the cross-entropy (on the raw logits) computed only
    when alpha < 1.
    """
    terms = {}
    if alpha > 0:
        terms[term] = alpha * temperature**2 * soft()
    if alpha < 1:
        terms["hard"] = (1 - alpha) * F.cross_entropy(student_logits, labels)
    return terms


def soft_target_terms(
    term: str,
    divergence: Divergence,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> dict[str, Tensor]:
    """The weighted terms of a soft-target loss, without validation (the hot path).

    Returns:
        ``{term: alpha T^2 mean_b divergence(log p_t, log p_s), "hard": (1 - alpha) CE}``, with
        ``p = softmax(logits / T)`` (of standardised logits with ``standardize``, the mean of an
        ensemble's members' probabilities), without a term whose weight is 0.
    """

    def soft() -> Tensor:
        log_q = student_log_probs(student_logits, temperature, standardize)
        log_p = teacher_log_probs(teacher_logits, temperature, standardize)
        return divergence(log_p, log_q).mean()

    return soft_and_hard_terms(
        term, soft, student_logits, labels, temperature=temperature, alpha=alpha
    )


def soft_target_loss(
    loss: str,
    term: str,
    divergence: Divergence,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: float,
    alpha: float,
    standardize: bool,
) -> Tensor:
    """The functional form of a soft-target loss named ``loss``: validated, the sum of its terms.

    Checks temperature, alpha and standardize, then the inputs (the labels' range too when the
    hard term needs them), and sums :func:`soft_target_terms`.
    """
    temperature, alpha, standardize = check_soft_target_arguments(temperature, alpha, standardize)
    check_inputs(
        student_logits, teacher_logits, labels, loss=loss, needs_labels=alpha < 1, label_range=True
    )
    terms = soft_target_terms(
        term,
        divergence,
        student_logits,
        teacher_logits,
        labels,
        temperature=temperature,
        alpha=alpha,
        standardize=standardize,
    )
    return sum_terms(terms)


class SoftTargetObjective(DistillationObjective):
    """A registered soft-target loss: ``{term: alpha T^2 mean_b D, "hard": (1 - alpha) CE}``.

    A subclass sets ``name`` (the registry's), ``term`` (its soft term's name) and defines
    :meth:`divergence`; a loss with more arguments takes them before these in its ``__init__``
    (validating them first), and one without ``standardize`` leaves it out of its ``__init__``
    (it is then never recorded, and False). :meth:`arguments` records the ``__init__``
    parameters.

    Args:
        temperature: T > 0. Default: 1.
        alpha: weight of the soft term in [0, 1]. Default: 1.
        standardize: logit standardisation (Sun et al. 2024). Default: False.
    """

    term: ClassVar[str]

    def __init__(
        self, temperature: float = 1.0, alpha: float = 1.0, standardize: bool = False
    ) -> None:
        super().__init__()
        self.temperature, self.alpha, self.standardize = check_soft_target_arguments(
            temperature, alpha, standardize
        )

    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """``D`` of each example, from the teacher's ``log_p`` and the student's ``log_q``."""
        raise NotImplementedError

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The weighted terms of a batch."""
        check_inputs(
            student_logits, teacher_logits, labels, loss=self.name, needs_labels=self.alpha < 1
        )
        return soft_target_terms(
            self.term,
            self.divergence,
            student_logits,
            teacher_logits,
            labels,
            temperature=self.temperature,
            alpha=self.alpha,
            standardize=self.standardize,
        )


def _as_float(name: str, value: float) -> float:
    if isinstance(value, bool):
        raise KDistillError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KDistillError(f"{name} must be a number, got {value!r}") from None
