"""kdistill: knowledge distillation for PyTorch (Hinton, Vinyals & Dean 2015)."""

import kdistill._openmp  # noqa: F401  (first: it must run before torch is imported)
from kdistill.data import Dataset, Split, load_dataset
from kdistill.errors import KDistillError
from kdistill.losses import (
    LOSSES,
    DistillationLoss,
    DistillationObjective,
    distillation_loss,
    ensemble_soft_targets,
    make_loss,
    register,
    soft_targets,
)
from kdistill.models import build_model
from kdistill.train import TrainConfig, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DistillationLoss",
    "DistillationObjective",
    "KDistillError",
    "LOSSES",
    "Split",
    "TrainConfig",
    "build_model",
    "distillation_loss",
    "ensemble_soft_targets",
    "evaluate",
    "fit",
    "load_dataset",
    "make_loss",
    "register",
    "soft_targets",
]
