"""Scoring a model or an ensemble: its logits on a split or a batch source, and its test errors.

``evaluate`` and ``predict_logits`` are also importable from :mod:`kdistill.train`, as before.
This module imports neither the training loop nor :mod:`kdistill.distributed`, so both can use
it (``distributed.evaluate`` shards it over the ranks) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.data import Split, as_batches
from kdistill.losses import log_soft_targets
from kdistill.teacher_logits import predict_in_blocks

Teacher = nn.Module | Sequence[nn.Module]
Data = Split | torch.utils.data.Dataset | torch.utils.data.DataLoader


def as_members(teacher: Teacher | None) -> list[nn.Module]:
    """A teacher as a list of ensemble members (one model is an ensemble of one)."""
    if teacher is None:
        return []
    return [teacher] if isinstance(teacher, nn.Module) else list(teacher)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict_logits(
    model: Teacher, split_images: Tensor, batch_size: int = 2000, bf16: bool = False
) -> Tensor:
    """Logits of a model, ``(N, C)``, or of each ensemble member, ``(M, N, C)``, in eval mode."""
    return predict_in_blocks(model, split_images, batch_size, bf16=bf16)


@torch.inference_mode()
def predict_batches(model: Teacher, source, batch_size: int, bf16: bool) -> tuple[Tensor, Tensor]:
    """Logits (``(N, C)``, or ``(M, N, C)`` for an ensemble) and labels of the batches of a
    :class:`~kdistill.data.DatasetBatches` or :class:`~kdistill.data.LoaderBatches`."""
    members = as_members(model)
    modes = [m.training for m in members]
    for member in members:
        member.eval()
    device = next(members[0].parameters()).device
    outputs, labels = [[] for _ in members], []
    for _, x, y in source.in_order(batch_size):
        x = x.to(device)
        with autocast(device, bf16):
            for out, member in zip(outputs, members, strict=True):
                out.append(member(x).float())
        labels.append(y.to(device))
    for member, mode in zip(members, modes, strict=True):
        member.train(mode)
    stacked = torch.stack([torch.cat(out) for out in outputs])
    return (stacked[0] if isinstance(model, nn.Module) else stacked), torch.cat(labels)


@torch.inference_mode()
def evaluate(model: Teacher, split: Data, batch_size: int = 2000, bf16: bool = False) -> dict:
    """Test errors, accuracy, per-class errors, confusion matrix and mean loss of a model.

    An ensemble is scored by the mean of its members' probabilities. ``split`` may also be a
    torch ``Dataset`` or ``DataLoader`` of ``(input, label)``.
    """
    if isinstance(split, Split):
        logits = predict_logits(model, split.images, batch_size, bf16)
    else:
        logits, labels = predict_batches(model, as_batches(split, batch_size), batch_size, bf16)
        split = Split(torch.empty(len(labels), 0), labels)  # what is scored below
    if logits.dim() == 3:  # ensemble: average probabilities, score their log
        log_probs = log_soft_targets(list(logits), 1.0)
    else:
        log_probs = F.log_softmax(logits, dim=-1)
    labels = split.labels.to(log_probs.device)
    num_classes = log_probs.shape[-1]
    predictions = log_probs.argmax(dim=-1)
    confusion = torch.bincount(
        labels * num_classes + predictions, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    wrong = predictions != labels
    return {
        "examples": len(split),
        "errors": int(wrong.sum()),
        "accuracy": float(1 - wrong.float().mean()) if len(split) else float("nan"),
        "loss": float(F.nll_loss(log_probs, labels)) if len(split) else float("nan"),
        "per_class_errors": torch.bincount(labels[wrong], minlength=num_classes).tolist(),
        "per_class_examples": torch.bincount(labels, minlength=num_classes).tolist(),
        "confusion": confusion.tolist(),
    }
