"""Logit standardisation (Sun et al., CVPR 2024): z-score each logit vector before the softmax.

One function, :func:`standardize_logits`, used by every KL-based loss of the logit family
(``hinton``, ``reverse-kl``, ``jsd``, ``skew-kl``, ``skew-reverse-kl``, ``dkd``) when it is built
with ``standardize=True``.
"""

from __future__ import annotations

from torch import Tensor

STANDARDIZE_EPS = 1e-7
"""Added to the standard deviation, as in the official code, so constant logits give zeros."""


def standardize_logits(logits: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    r"""Z-score of each logit vector over the last (class) dimension.

    From Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024: the teacher and
    the student each get their own "temperature" equal to the standard deviation of their logits, so
    the student is asked to match the teacher's logit *relations* rather than their range:

    .. math::
        \mathcal{Z}(z)_k = \frac{z_k - \bar z}{\sigma(z) + \epsilon}, \qquad
        \bar z = \frac{1}{C}\sum_k z_k, \quad
        \sigma(z) = \sqrt{\frac{1}{C - 1}\sum_k (z_k - \bar z)^2}

    The losses then take ``softmax(Z(z) / T)``, where T plays the role of the paper's *base
    temperature* (so the effective temperature of a logit vector is ``T * sigma(z)``), and keep
    their ``T^2`` scaling, as the official code does.

    Conventions, those of the official code (``sunshangquan/logit-standardization-KD``,
    ``normalize``; also torchdistill's ``LogitStdKDLoss``): the standard deviation is the
    Bessel-corrected one (``torch.std``, divisor ``C - 1``; a population std, divisor ``C``,
    would only rescale every vector by ``sqrt(C / (C - 1))``, i.e. change the base
    temperature), and ``eps`` is added to it.

    The result does not change when a constant is added to all logits of a vector, and changes by
    less than ``eps / sigma`` relative when they are multiplied by a positive number.

    Args:
        logits: ``(..., C)`` with ``C >= 2``; each vector along the last dimension is
            standardised on its own (for an ensemble ``(M, B, C)``, each member's vector).
        eps: added to the standard deviation; 0 gives the exact z-score (undefined for a
            constant vector).

    Returns:
        A tensor of the same shape and dtype.
    """
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred / (logits.std(dim=-1, keepdim=True) + eps)
