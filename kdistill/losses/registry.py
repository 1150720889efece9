"""Losses by name: the registry the config, the CLI and the loop build losses from.

``make_loss("hinton", temperature=4.0, alpha=0.9)`` is what ``--loss hinton --loss-arg
temperature=4 --loss-arg alpha=0.9`` (or ``-T 4 --alpha 0.9``) and ``TrainConfig(loss="hinton",
loss_args={...})`` turn into. A new loss is a :class:`~kdistill.losses.base.DistillationObjective`
subclass decorated with :func:`register`, imported in ``kdistill/losses/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdistill.errors import KDistillError
from kdistill.losses.base import DistillationObjective, constructor_parameters

LOSSES: dict[str, type[DistillationObjective]] = {}

DISTILLATION_DEFAULT = "hinton"  # the loss of a run with a teacher that names none
HARD_LABEL_DEFAULT = "cross-entropy"  # ... and of a run without a teacher


def register(cls: type[DistillationObjective]) -> type[DistillationObjective]:
    """Class decorator: make ``cls`` buildable by its ``name`` with :func:`make_loss`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute name = '...' to register")
    if LOSSES.get(name, cls) is not cls:
        raise TypeError(
            f"two losses named {name!r}: {LOSSES[name].__qualname__}, {cls.__qualname__}"
        )
    LOSSES[name] = cls
    return cls


def default_loss(distilling: bool) -> str:
    """The loss a config that names none uses: Hinton's with a teacher, else cross-entropy."""
    return DISTILLATION_DEFAULT if distilling else HARD_LABEL_DEFAULT


def make_loss(name: str, **arguments: Any) -> DistillationObjective:
    """Build the registered loss ``name`` with ``arguments`` (validated by the loss, once).

    Raises:
        KDistillError: an unknown name, an argument the loss does not take, a missing or an
            invalid value; one line, listing the valid names or arguments.
    """
    if name not in LOSSES:
        raise KDistillError(f"unknown loss {name!r}: choose one of {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    valid = constructor_parameters(cls)
    unknown = [key for key in arguments if key not in valid]
    if unknown:
        raise KDistillError(
            f"loss {name!r} takes no argument {unknown[0]!r}; its arguments are "
            f"{', '.join(valid) or 'none'}"
        )
    try:
        return cls(**arguments)
    except KDistillError as exc:
        raise KDistillError(f"loss {name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a missing argument, a value of the wrong type
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KDistillError(
            f"loss {name!r} (arguments {', '.join(valid) or 'none'}): {first_line}"
        ) from None


def parse_loss_args(items: Sequence[str]) -> dict[str, Any]:
    """``["temperature=4", "alpha=0.9"]`` (repeated ``--loss-arg``) as a dict of literals.

    Values are read as numbers (``4``, ``0.9``, ``1e-3``), booleans (``true``/``false``),
    ``none``, or else kept as strings.
    """
    arguments: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key.isidentifier():
            raise KDistillError(f"--loss-arg takes KEY=VALUE, e.g. temperature=4; got {item!r}")
        if key in arguments:
            raise KDistillError(f"--loss-arg {key} is given twice")
        arguments[key] = parse_literal(text.strip())
    return arguments


def parse_literal(text: str) -> Any:
    """A command-line value as an int, float, bool, None or (otherwise) the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
