"""Models from short specs (``mlp:1200x1200,dropout=0.5``), and what kdistill needs of any model.

Any ``nn.Module`` that maps a batch ``(B, ...)`` to logits ``(B, C)`` works as a teacher or
student. The specs here only name the paper's models and a small CNN, plus ``package.module:fn``
for a user's own model function.

Spec grammar: ``KIND:ARCH[,key=value...]``

- ``mlp:1200x1200`` hidden widths; options ``dropout`` (hidden units), ``input_dropout``, and
  ``input_mean``/``input_std``: the model sees ``(x - input_mean) / input_std`` (e.g. 0.5/0.5
  maps [0, 1] pixels to [-1, 1]); the scaling is part of the model, so a run keeps its own.
- ``cnn:32x64`` conv channels (5x5 conv, ReLU, 2x2 max-pool each); option ``hidden`` (units of
  the fully connected layer, default 128), ``dropout``, and ``input_mean``/``input_std`` as for
  ``mlp``.
- :func:`with_input_scaling` writes a dataset's pixel statistics into a built-in spec that sets
  no scaling of its own (the CLI's ``--inputs standardized``).
- ``package.module:function`` calls ``function(**options)`` and expects an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from kdistill.errors import KDistillError


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed numbers: an input scaling that travels with the model."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise KDistillError(f"input_std must be > 0, got {std}")
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask: a uniform draw compared with ``p`` in place.

    ``torch.rand(shape).ge_(p).mul_(1 / (1 - p))`` keeps each unit with probability ``1 - p``
    and scales it by ``1 / (1 - p)``, as ``nn.Dropout`` does, at a quarter of the time of its
    ``bernoulli_`` on CPU (forward and backward of a 128 x 1200 layer, one thread: 0.8 ms
    against 3.3 ms), which made dropout 17% of the paper teacher's step (issue 15). Masks have
    the same distribution as ``nn.Dropout``'s but are other draws: a run made before this class
    does not replay bit for bit. The mask is drawn in fp32 even under bf16 autocast, so that
    the keep rate is exactly ``1 - p``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device).ge_(self.p).mul_(1 / (1 - self.p))
        return x * keep.to(x.dtype)  # (no copy when the dtypes match)


class MLP(nn.Module):
    """Fully connected ReLU network with dropout on the inputs and on each hidden layer."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        input_mean: float = 0.0,
        input_std: float = 1.0,
    ) -> None:
        super().__init__()
        # outside ``net``, so a scaled model's weights have the same names as an unscaled one's
        self.inputs = _input_scaling(input_mean, input_std)
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(Dropout(input_dropout))
        width = in_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(x))


class SmallCNN(nn.Module):
    """Conv(5x5)-ReLU-MaxPool blocks, then one hidden fully connected layer."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        num_classes: int,
        hidden: int = 128,
        dropout: float = 0.0,
        input_mean: float = 0.0,
        input_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.inputs = _input_scaling(input_mean, input_std)  # no weights: the same state_dict
        in_channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 5, padding=2), nn.ReLU()]
            if min(height, width) >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(),
            Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.inputs(x)))


def _input_scaling(mean: float, std: float) -> nn.Module:
    """The layer that scales a model's inputs: nothing to do for (0, 1)."""
    return Standardize(mean, std) if (mean, std) != (0.0, 1.0) else nn.Identity()


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``KIND:ARCH,key=value,...`` into ``(kind, arch, options)``."""
    head, _, rest = spec.partition(",")
    kind, sep, arch = head.partition(":")
    if not sep or not kind or not arch:
        raise KDistillError(
            f"bad model spec {spec!r}: expected e.g. 'mlp:1200x1200', 'cnn:32x64' "
            "or 'package.module:function'"
        )
    options: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise KDistillError(f"bad option {item!r} in model spec {spec!r}: expected key=value")
        options[key.strip()] = value.strip()
    return kind.strip(), arch.strip(), options


BUILTIN_KINDS = ("mlp", "cnn")
INPUT_SCALING_OPTIONS = ("input_mean", "input_std")
SCALING_DECIMALS = 4  # of the statistics written into a spec: 0.1307, 0.3081 for MNIST


def imports_code(spec: str) -> bool:
    """Whether building ``spec`` would import a module and call a function (``module:fn``)."""
    return parse_spec(spec)[0] not in BUILTIN_KINDS


def takes_input_scaling(spec: str) -> bool:
    """Whether :func:`with_input_scaling` would change ``spec``: a built-in model (mlp, cnn)
    whose spec sets neither ``input_mean`` nor ``input_std``."""
    kind, _, options = parse_spec(spec)
    return kind in BUILTIN_KINDS and not any(key in options for key in INPUT_SCALING_OPTIONS)


def with_input_scaling(spec: str, mean: float, std: float) -> str:
    """``spec`` with ``input_mean=MEAN,input_std=STD`` appended, each rounded to 4 decimals.

    A spec that sets ``input_mean`` or ``input_std`` itself keeps its own scaling, and a
    ``package.module:function`` spec is returned unchanged (its function gets no options it
    did not ask for, and scales its inputs itself if it wants to).

    Raises:
        KDistillError: a statistic that is not finite, or a std that rounds to 0 or below.
    """
    if not takes_input_scaling(spec):
        return spec
    mean, std = round(mean, SCALING_DECIMALS), round(std, SCALING_DECIMALS)
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise KDistillError(
            f"cannot standardize the inputs of {spec!r} by mean {mean} and std {std} (the "
            "data's pixels do not vary): use --inputs raw"
        )
    return f"{spec.rstrip(',')},input_mean={mean!r},input_std={std!r}"


def build_model(spec: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build a fresh model from its spec, for inputs of ``input_shape`` (without the batch)."""
    kind, arch, options = parse_spec(spec)
    if kind == "mlp":
        known = {"dropout", "input_dropout", *INPUT_SCALING_OPTIONS}
        _check_options(spec, options, known)
        return MLP(
            math.prod(input_shape),
            _widths(spec, arch),
            num_classes,
            dropout=_float_option(spec, options, "dropout"),
            input_dropout=_float_option(spec, options, "input_dropout"),
            input_mean=_float_option(spec, options, "input_mean"),
            input_std=_float_option(spec, options, "input_std", default=1.0),
        )
    if kind == "cnn":
        _check_options(spec, options, {"hidden", "dropout", *INPUT_SCALING_OPTIONS})
        if len(input_shape) != 3:
            raise KDistillError(f"model {spec!r} needs (channels, height, width) inputs")
        return SmallCNN(
            input_shape,
            _widths(spec, arch),
            num_classes,
            hidden=int(options.get("hidden", 128)),
            dropout=_float_option(spec, options, "dropout"),
            input_mean=_float_option(spec, options, "input_mean"),
            input_std=_float_option(spec, options, "input_std", default=1.0),
        )
    if "." in kind or kind.isidentifier():
        return _import_model(spec, kind, arch, options)
    raise KDistillError(f"unknown model kind {kind!r} in {spec!r}: use mlp, cnn or module:function")


def _import_model(spec: str, module_name: str, attr: str, options: dict[str, str]) -> nn.Module:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # like `python -m`: a model file beside the user is found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if "." not in module_name:
            raise KDistillError(
                f"unknown model kind {module_name!r} in {spec!r}: use mlp, cnn or "
                f"package.module:function (importing {module_name!r} failed: {exc})"
            ) from None
        raise KDistillError(
            f"cannot import module {module_name!r} for model {spec!r}: {exc}"
        ) from None
    except Exception as exc:  # an error raised while the module itself runs
        raise KDistillError(
            f"cannot import module {module_name!r} for model {spec!r}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise KDistillError(f"module {module_name!r} has no function {attr!r} (model {spec!r})")
    try:
        model = factory(**{k: _literal(v) for k, v in options.items()})
    except Exception as exc:  # a wrong option name or value, or a bug in the function
        raise KDistillError(
            f"{module_name}:{attr}({', '.join(f'{k}={v}' for k, v in options.items())}) failed: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise KDistillError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _literal(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _widths(spec: str, arch: str) -> list[int]:
    try:
        widths = [int(part) for part in arch.lower().split("x")]
    except ValueError:
        raise KDistillError(
            f"bad layer widths {arch!r} in model spec {spec!r}: e.g. 800x800"
        ) from None
    if any(w < 1 for w in widths):
        raise KDistillError(f"layer widths must be >= 1 in model spec {spec!r}")
    return widths


def _check_options(spec: str, options: dict[str, str], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise KDistillError(
            f"unknown option(s) {', '.join(sorted(unknown))} in model spec {spec!r}; "
            f"known: {', '.join(sorted(known))}"
        )


def _float_option(spec: str, options: dict[str, str], key: str, default: float = 0.0) -> float:
    """A number option; dropout rates (any ``*dropout`` key) must lie in [0, 1)."""
    try:
        value = float(options.get(key, default))
    except ValueError:
        raise KDistillError(f"option {key} must be a number in model spec {spec!r}") from None
    if key.endswith("dropout") and not 0 <= value < 1:
        raise KDistillError(f"{key} must be in [0, 1) in model spec {spec!r}, got {value}")
    if not math.isfinite(value):
        raise KDistillError(f"{key} must be finite in model spec {spec!r}, got {value}")
    return value


# --------------------------------------------------------------------------- constraints


@torch.no_grad()
def max_norm_(model: nn.Module, max_norm: float) -> None:
    """Rescale each unit's incoming weight vector to an L2 norm of at most ``max_norm``.

    The constraint of the dropout paper (Srivastava et al. 2014), applied after each update to
    every ``nn.Linear`` (rows of its weight) and ``nn.Conv2d`` (one filter per output channel).
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight = module.weight
            norms = weight.flatten(1).norm(dim=1).clamp_min(max_norm)
            weight.mul_((max_norm / norms).view(-1, *([1] * (weight.dim() - 1))))


def output_layer(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear``, whose bias gives the per-class offsets of the logits."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None:
        raise KDistillError("the model has no final nn.Linear layer with a bias to shift")
    return linears[-1]


@torch.no_grad()
def shift_output_bias_(model: nn.Module, shifts: dict[int, float]) -> None:
    """Add ``shifts[c]`` to the output bias of each class ``c`` (paper, section 3's fix)."""
    bias = output_layer(model).bias
    for cls, value in shifts.items():
        if not 0 <= cls < bias.shape[0]:
            raise KDistillError(f"class {cls} is out of range: the model has {bias.shape[0]}")
        bias[cls] += value


# --------------------------------------------------------------------------- cost


def count_parameters(model: nn.Module) -> int:
    """The number of parameters (frozen ones too: a teacher's cost counts all of them)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_example(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of one example (2 per multiply-add) of its Linear and Conv2d layers."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += 2 * kernel * output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def inference_throughput(
    model: nn.Module, input_shape: Sequence[int], batch_size: int = 1000, seconds: float = 0.5
) -> float:
    """Measured examples/s of the model in eval mode on random inputs of ``input_shape``."""
    device = next(model.parameters()).device
    x = torch.rand(batch_size, *input_shape, device=device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        model(x)  # warm-up
        done, start = 0, time.perf_counter()
        while True:
            model(x)
            done += batch_size
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    model.train(was_training)
    return done / elapsed
