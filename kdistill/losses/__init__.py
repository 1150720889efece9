"""Distillation losses: soft targets, the Hinton et al. (2015) objective, losses by name.

- :mod:`~kdistill.losses.base`: :class:`DistillationObjective`, what the training loop calls.
- :mod:`~kdistill.losses.registry`: :data:`LOSSES`, :func:`register`, :func:`make_loss`.
- :mod:`~kdistill.losses.targets`: soft targets at a temperature and shared input checks.
- :mod:`~kdistill.losses.hinton`: :func:`distillation_loss` and the ``"hinton"`` loss.
- :mod:`~kdistill.losses.cross_entropy`: hard labels only, the ``"cross-entropy"`` loss.

A new loss module is imported here, so that its ``@register`` runs with the package.
"""

from kdistill.losses.base import DistillationObjective, check_ensemble_support, sum_terms
from kdistill.losses.registry import (
    LOSSES,
    default_loss,
    make_loss,
    parse_loss_args,
    register,
)
from kdistill.losses.targets import (
    TeacherLogits,
    check_alpha,
    check_labels,
    check_logits,
    check_temperature,
    ensemble_soft_targets,
    log_soft_targets,
    soft_targets,
)

# isort: split
from kdistill.losses.cross_entropy import CrossEntropyLoss
from kdistill.losses.hinton import (
    DistillationLoss,
    HintonLoss,
    distillation_loss,
    distillation_loss_unchecked,
    hinton_terms,
)

# isort: split
# The logit-distillation family (issue 13); importing registers each loss.
from kdistill.losses.dist import DISTLoss, dist_loss
from kdistill.losses.dkd import DKDLoss, dkd_loss
from kdistill.losses.jsd import JSDLoss, jsd_loss
from kdistill.losses.reverse_kl import ReverseKLLoss, reverse_kl_loss
from kdistill.losses.skew_kl import (
    SkewKLLoss,
    SkewReverseKLLoss,
    skew_kl_loss,
    skew_reverse_kl_loss,
)
from kdistill.losses.standardize import standardize_logits
from kdistill.losses.tv import TVLoss, tv_loss

__all__ = [
    "LOSSES",
    "DISTLoss",
    "DKDLoss",
    "JSDLoss",
    "ReverseKLLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "TVLoss",
    "dist_loss",
    "dkd_loss",
    "jsd_loss",
    "reverse_kl_loss",
    "skew_kl_loss",
    "skew_reverse_kl_loss",
    "standardize_logits",
    "tv_loss",
    "CrossEntropyLoss",
    "DistillationLoss",
    "DistillationObjective",
    "HintonLoss",
    "TeacherLogits",
    "check_alpha",
    "check_ensemble_support",
    "check_labels",
    "check_logits",
    "check_temperature",
    "default_loss",
    "distillation_loss",
    "distillation_loss_unchecked",
    "ensemble_soft_targets",
    "hinton_terms",
    "log_soft_targets",
    "make_loss",
    "parse_loss_args",
    "register",
    "soft_targets",
    "sum_terms",
]
