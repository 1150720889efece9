"""Shared pieces of the logit-distillation losses: argument checks and soft targets.

Every loss of the logit family (``dkd``, ``dist``, ``reverse-kl``, ``jsd``, ``tv``, ``skew-kl``,
``skew-reverse-kl``) validates its hyper-parameters with the ``check_*`` functions here (one-line
:class:`~kdistill.errors.KDistillError`) and turns logits into (log-)probabilities with
:func:`student_log_probs` and :func:`teacher_log_probs`, so that temperature, logit
standardisation and teacher ensembles mean the same thing in all of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.errors import KDistillError
from kdistill.losses.standardize import standardize_logits


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
) -> None:
    """Raise a one-line error when logits or labels cannot be used by a logit loss.

    Checks shapes and dtypes only (no device synchronisation, so it is cheap on every step).

    Args:
        student_logits: ``(B, C)`` floating point, ``C >= 2``.
        teacher_logits: ``(B, C)``, or ``(M, B, C)`` for an ensemble of M members.
        labels: ``(B,)`` integer class indices, or None when no term needs them.
        loss: the loss's name, for the messages.
        needs_labels: whether some term of the loss (hard-label CE, DKD) uses the labels.
        supports_ensemble: whether ``(M, B, C)`` teacher logits are accepted.
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


def _as_float(name: str, value: float) -> float:
    if isinstance(value, bool):
        raise KDistillError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KDistillError(f"{name} must be a number, got {value!r}") from None
