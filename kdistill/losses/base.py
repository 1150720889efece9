"""The interface between the training loop and a loss: :class:`DistillationObjective`.

The loop knows no loss by name. It builds one from the config (see
:mod:`kdistill.losses.registry`), calls it on every batch with the student's logits, the
teacher's *raw* logits (or None) and the labels, sums the named terms it returns and logs each
term's epoch mean. A loss therefore owns all of its hyper-parameters (a temperature lives
nowhere else), validates them once in ``__init__``, and works from the same cached teacher
logits as every other loss.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import Tensor, nn

from kdistill.errors import KDistillError


class DistillationObjective(nn.Module):
    """A loss the training loop calls: student logits, raw teacher logits, labels -> named terms."""

    name: ClassVar[str]  # registry name, e.g. "hinton"
    supports_ensemble: ClassVar[bool] = True

    def __call__(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """Refuse an ensemble's ``(M, B, C)`` logits for a loss that defines none, then forward."""
        if teacher_logits is not None and teacher_logits.dim() == 3:
            check_ensemble_support(self, teacher_logits.shape[0])
        return super().__call__(student_logits, teacher_logits, labels)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The loss of a batch, as named scalar terms.

        teacher_logits: raw logits (B, C), or (M, B, C) for an ensemble of M members; None when
        training on hard labels only. Returns named scalar terms, each already weighted; the
        loop sums them and logs each.
        """
        raise NotImplementedError

    def arguments(self) -> dict[str, Any]:
        """The constructor arguments, recorded in config.json.

        The default reads, for each parameter of ``__init__``, the attribute of the same name;
        a loss that stores its arguments otherwise overrides this.
        """
        values = {}
        for parameter in constructor_parameters(type(self)):
            if not hasattr(self, parameter):
                raise KDistillError(
                    f"loss {self.name!r} keeps no attribute {parameter!r}: store each "
                    "constructor argument under its name, or override arguments()"
                )
            values[parameter] = getattr(self, parameter)
        return values

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the loop before epoch ``epoch`` (0-based) of ``epochs``; default no-op.

        Also called for the epoch a resumed run continues from, so a loss whose weights
        depend on the epoch (e.g. a warm-up) resumes exactly.
        """

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.arguments().items())


def sum_terms(terms: dict[str, Tensor]) -> Tensor:
    """The loss the terms add up to, summed in their order (the training loop does the same)."""
    if not terms:
        raise KDistillError("a loss returned no terms: it must return at least one")
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total + value
    return total


def constructor_parameters(cls: type[DistillationObjective]) -> list[str]:
    """The names of the keyword arguments a loss class's ``__init__`` takes."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.name != "self" and p.kind in kinds]


def check_ensemble_support(loss: DistillationObjective, members: int) -> None:
    """Raise if ``loss`` defines no ensemble and is given a teacher of ``members`` > 1 models."""
    if members > 1 and not loss.supports_ensemble:
        raise KDistillError(
            f"the {loss.name!r} loss does not define an ensemble teacher ({members} members "
            "given): distil from one teacher, or use a loss that averages members, e.g. 'hinton'"
        )
