"""The one training loop: a model on hard labels, or a student distilled from a teacher.

``fit`` trains any ``nn.Module`` on an in-memory :class:`~kdistill.data.Split` (the fast path) or
on a ``torch.utils.data.Dataset`` / ``DataLoader`` (for data that does not fit in memory or has
its own transforms). Given a teacher (one model or a list of models, an ensemble) it minimises
the distillation loss; without one, plain cross-entropy. When the transfer set is not augmented
the teacher's logits are computed once and reused every epoch, which gives the same loss as
running the teacher online.
With a checkpoint folder it saves every epoch and can resume bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdistill import distributed
from kdistill.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from kdistill.data import (
    Split,
    as_batches,
    batch_indices,
    random_shifts,
    shift_images,
    train_val_split,
    view_index,
)
from kdistill.errors import KDistillError
from kdistill.losses import (
    check_alpha,
    check_labels,
    check_temperature,
    distillation_loss_unchecked,
    log_soft_targets,
)
from kdistill.models import max_norm_
from kdistill.teacher_logits import TeacherLogitsFile, log_soft_target_table

Teacher = nn.Module | Sequence[nn.Module]
Data = Split | torch.utils.data.Dataset | torch.utils.data.DataLoader


SCHEDULES = ("cosine", "constant", "linear", "exponential")


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; saved with every run.

    ``temperature`` and ``alpha`` apply only when a teacher is given. ``alpha`` is the weight
    of the soft-target term (1 = soft targets only, as in the paper's MNIST students).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (to 0 over the run), "constant", "linear", "exponential"
    lr_decay: float = 1.0  # the exponential schedule's factor per epoch (0.998 in Hinton 2012)
    max_norm: float | None = None  # max L2 norm of each unit's incoming weights
    grad_clip: float | None = None  # max L2 norm of the whole gradient, per step
    jitter: int = 0  # translate inputs by up to this many pixels
    temperature: float = 1.0
    alpha: float = 1.0
    val_fraction: float = 0.0  # stratified hold-out from the training split
    patience: int | None = None  # early stopping: epochs without a better validation error
    seed: int = 0
    eval_batch_size: int = 2000
    cache_teacher_logits: bool = True
    bf16: bool = False  # bf16 autocast for forward passes; weights stay fp32
    device: str = "auto"

    def validate(self) -> None:
        """Raise a clear error on a setting that cannot work."""
        if self.epochs < 1:
            raise KDistillError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise KDistillError(f"batch size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise KDistillError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise KDistillError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not 0 < self.lr_decay <= 1:
            raise KDistillError(f"lr decay per epoch must be in (0, 1], got {self.lr_decay}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise KDistillError(f"learning rate must be > 0, got {self.lr}")
        if self.max_norm is not None and not self.max_norm > 0:
            raise KDistillError(f"max-norm must be > 0, got {self.max_norm}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise KDistillError(f"gradient clipping norm must be > 0, got {self.grad_clip}")
        if self.jitter < 0:
            raise KDistillError(f"jitter must be >= 0 pixels, got {self.jitter}")
        if not 0 <= self.val_fraction < 1:
            raise KDistillError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience is not None and self.val_fraction == 0:
            raise KDistillError(
                "early stopping (patience) needs a validation split: set val_fraction"
            )
        check_temperature(self.temperature)
        check_alpha(self.alpha)


@dataclass
class FitResult:
    """What a finished ``fit`` returns: one history row per epoch and the final evaluation."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def as_members(teacher: Teacher | None) -> list[nn.Module]:
    """A teacher as a list of ensemble members (one model is an ensemble of one)."""
    if teacher is None:
        return []
    return [teacher] if isinstance(teacher, nn.Module) else list(teacher)


@torch.inference_mode()
def predict_logits(
    model: Teacher, split_images: Tensor, batch_size: int = 2000, bf16: bool = False
) -> Tensor:
    """Logits of a model, ``(N, C)``, or of each ensemble member, ``(M, N, C)``, in eval mode."""
    members = as_members(model)
    outputs = []
    for member in members:
        was_training = member.training
        member.eval()
        device = next(member.parameters()).device
        chunks = []
        for start in range(0, len(split_images), batch_size):
            x = split_images[start : start + batch_size].to(device)
            with _autocast(device, bf16):
                chunks.append(member(x).float())
        member.train(was_training)
        outputs.append(torch.cat(chunks))
    stacked = torch.stack(outputs)
    return stacked[0] if isinstance(model, nn.Module) else stacked


@torch.inference_mode()
def evaluate(model: Teacher, split: Data, batch_size: int = 2000, bf16: bool = False) -> dict:
    """Test errors, accuracy, per-class errors, confusion matrix and mean loss of a model.

    An ensemble is scored by the mean of its members' probabilities. ``split`` may also be a
    torch ``Dataset`` or ``DataLoader`` of ``(input, label)``.
    """
    if isinstance(split, Split):
        logits = predict_logits(model, split.images, batch_size, bf16)
    else:
        logits, labels = _predict_batches(model, as_batches(split, batch_size), batch_size, bf16)
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


def fit(
    model: nn.Module,
    train: Data,
    config: TrainConfig,
    *,
    teacher: Teacher | None = None,
    teacher_logits: Tensor | TeacherLogitsFile | None = None,
    test: Split | None = None,
    val: Split | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``: on hard labels, or distilled from ``teacher``.

    Args:
        model: the model (student) to train, in place.
        train: the training split (the *transfer set* when distilling): a ``Split`` (in
            memory, fastest), a torch ``Dataset`` of ``(input, label)`` (batched and shuffled
            by kdistill; teacher logits cached by example index unless it augments randomly)
            or a ``DataLoader`` (used as it is; the teacher runs online).
        config: optimisation and distillation settings.
        teacher: a trained model or a list of them (an ensemble); frozen, run in eval mode.
        teacher_logits: precomputed teacher logits for ``train``, ``(N, C)`` or ``(M, N, C)``
            in example order (e.g. shared by every cell of a sweep); computed here when
            caching applies. Or a :class:`~kdistill.teacher_logits.TeacherLogitsFile` (then no
            teacher is needed): looked up by each example's canonical index
            (``train.example_ids``) and, with jitter, by each example's shift.
        test: scored after every epoch (reported only; never used to choose anything).
        val: held-out split for early stopping; if None and ``config.val_fraction`` > 0 it is
            split off ``train`` (stratified, seeded).
        checkpoint_dir: save a checkpoint there after every epoch.
        resume: continue from the checkpoint in ``checkpoint_dir``.
        progress: show a progress bar.
        on_epoch: called after each epoch with the history so far.

    Returns:
        The history and, with early stopping, the best epoch (whose weights ``model`` holds).

    Under torchrun (an initialised process group) it trains data-parallel with DDP:
    ``config.batch_size`` is per rank, every rank returns the same history, and only rank 0
    writes checkpoints and shows progress (see :mod:`kdistill.distributed`).
    """
    config.validate()
    ctx = distributed.context()
    device = resolve_device(config.device)
    members = as_members(teacher)
    distilling = bool(members) or teacher_logits is not None
    stream = None if isinstance(train, Split) else as_batches(train, config.batch_size)
    if stream is not None and ctx.distributed:
        raise KDistillError(
            "data-parallel training under torchrun takes an in-memory Split; a Dataset or "
            "DataLoader would need a DistributedSampler, which kdistill does not set up"
        )
    probe = train.images[:1] if stream is None else stream.first_input()
    num_classes = _check_models(model, members, probe, device)
    if val is None and config.val_fraction > 0:
        if stream is not None:
            raise KDistillError("val_fraction needs an in-memory Split; pass val= for a Dataset")
        train, val = train_val_split(train, config.val_fraction, config.seed)
    if stream is None:
        check_labels(train.labels, num_classes)
    if teacher_logits is not None and stream is not None and not stream.indexed:
        raise KDistillError(
            "teacher_logits are looked up by example index: pass the Dataset itself, not a "
            "DataLoader (whose batches carry no indices)"
        )

    torch.manual_seed(config.seed)
    model.to(device)
    for member in members:
        member.to(device).eval().requires_grad_(False)
    data_gen = torch.Generator(device=device).manual_seed(config.seed)
    train_images = train_labels = None
    if stream is None:
        train_images, train_labels = train.images.to(device), train.labels.to(device)
    soft_log_probs = None  # the teacher's cached soft targets (log): (N, C), or (V, N, C)
    if isinstance(teacher_logits, TeacherLogitsFile):
        soft_log_probs = _file_soft_targets(teacher_logits, train, stream, config, num_classes)
    elif distilling:
        soft_log_probs = _cached_soft_targets(
            teacher, train_images, stream, teacher_logits, config, num_classes, device
        )

    optimizer = _make_optimizer(model, config)
    global_batch = config.batch_size * ctx.world_size
    steps_per_epoch = math.ceil(len(train) / global_batch) if stream is None else stream.steps
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch * config.epochs)

    result, loop = FitResult(), _Loop()
    if resume:
        loop = _restore(
            checkpoint_dir, config, device, model, optimizer, scheduler, data_gen, result
        )
    elif checkpoint_dir is not None and distributed.on_main(lambda: has_checkpoint(checkpoint_dir)):
        raise KDistillError(
            f"{checkpoint_dir} already holds a checkpoint: pass --resume to continue it, "
            "or choose a new --out"
        )

    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        initial=steps_per_epoch * loop.epoch,
        disable=not (progress and ctx.is_main),
        desc="distill" if distilling else "train",
        unit="step",
        leave=False,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    step_losses = torch.zeros(steps_per_epoch, device=device)
    net = distributed.wrap(model, device)  # DDP averages gradients across ranks
    for epoch in range(loop.epoch, config.epochs):
        model.train()
        epoch_start = time.perf_counter()
        if ctx.distributed:  # each rank its own dropout masks, reproducible on resume
            torch.manual_seed(distributed.rank_seed(config.seed, epoch, ctx.rank))
        batches = (
            _split_batches(train_images, train_labels, global_batch, data_gen, config.jitter, ctx)
            if stream is None
            else _jittered(
                _device_batches(stream.epoch(data_gen), device, num_classes),
                config.jitter,
                data_gen,
            )
        )
        for step, (index, x, y, shifts, share) in enumerate(batches):
            with _autocast(device, config.bf16):
                logits = net(x).float()
            if not distilling:
                loss = F.cross_entropy(logits, y)
            else:
                teacher_log_probs = (
                    _look_up(soft_log_probs, index, shifts, config.jitter)
                    if soft_log_probs is not None
                    else _online_soft_targets(members, x, config, device)
                )
                loss = distillation_loss_unchecked(
                    logits,
                    None,
                    y,
                    temperature=config.temperature,
                    alpha=config.alpha,
                    teacher_log_probs=teacher_log_probs,
                )
            if ctx.distributed:  # this shard's weight in the global batch's mean loss
                # an empty shard (fewer examples left than ranks) still joins the all-reduce
                loss = loss * share if len(index) else 0 * logits.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:  # no host sync: the norm stays on the device
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
            optimizer.step()
            scheduler.step()
            if config.max_norm is not None:
                max_norm_(model, config.max_norm)
            step_losses[step] = loss.detach()
            if step % 100 == 99:  # one device sync per 100 steps
                _check_finite(step_losses[: step + 1], epoch, steps_per_epoch)
            bar.update()
        _check_finite(step_losses, epoch, steps_per_epoch)
        epoch_losses = step_losses
        if ctx.distributed:  # sum of the ranks' weighted shard losses / W = global batch loss
            epoch_losses = distributed.all_reduce_sum(step_losses) / ctx.world_size

        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(epoch_losses.mean()),
            "seconds": round(time.perf_counter() - epoch_start, 3),
        }
        for name, split in (("val", val), ("test", test)):
            if split is not None:
                scored = distributed.evaluate(model, split, config.eval_batch_size)
                row[f"{name}_errors"], row[f"{name}_loss"] = scored["errors"], scored["loss"]
        result.history.append(row)
        bar.set_postfix(
            {k: row[k] for k in ("train_loss", "val_errors", "test_errors") if k in row}
        )

        loop.epoch, stop = epoch + 1, False
        if val is not None:
            if row["val_errors"] < loop.best_val:
                loop.best_val, loop.bad_epochs, result.best_epoch = row["val_errors"], 0, epoch + 1
                loop.best_state = copy.deepcopy(model.state_dict())
            else:
                loop.bad_epochs += 1
                stop = config.patience is not None and loop.bad_epochs >= config.patience
        if checkpoint_dir is not None and ctx.is_main:
            state = _checkpoint_state(config, loop, result, model, optimizer, scheduler, data_gen)
            save_checkpoint(checkpoint_dir, state, epoch + 1)
        if on_epoch is not None:
            on_epoch(result.history)
        if stop:
            result.stopped_early = True
            break
    bar.close()
    if loop.best_state is not None and config.patience is not None:
        model.load_state_dict(loop.best_state)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Loop:
    """Where the epoch loop stands: what a checkpoint must restore besides the weights."""

    epoch: int = 0  # epochs done
    best_val: float = math.inf
    bad_epochs: int = 0
    best_state: dict | None = None  # weights at the best validation error


def _cached_soft_targets(
    teacher: Teacher,
    train_images: Tensor | None,
    stream,
    teacher_logits: Tensor | None,
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
) -> Tensor | None:
    """The teacher's log soft targets for every transfer example, or None to run it online.

    Cached when the transfer set is the same every epoch (no jitter, no random transforms) and
    batches carry example indices; ``teacher_logits`` given by the caller are always used.
    """
    if config.alpha == 0 or (config.jitter and teacher_logits is None):
        return None
    if stream is not None and not stream.indexed:
        return None
    size = len(train_images) if stream is None else len(stream)
    cacheable = stream is None or stream.is_deterministic()  # no random augmentation
    if teacher_logits is None and config.cache_teacher_logits and cacheable:
        if stream is None:  # each rank runs the teacher on its shard, then all gather
            ctx = distributed.context()
            shard = distributed.shard_slice(size, ctx.rank, ctx.world_size)
            teacher_logits = predict_logits(
                teacher, train_images[shard], config.eval_batch_size, config.bf16
            )
            teacher_logits = distributed.all_gather_rows(teacher_logits, size, dim=-2)
        else:
            batches = _predict_batches(teacher, stream, config.eval_batch_size, config.bf16)
            teacher_logits = batches[0]
    if teacher_logits is None:
        return None
    source = teacher_logits.to(device)
    soft_log_probs = log_soft_targets(
        list(source) if source.dim() == 3 else source, config.temperature
    ).clone()  # a normal tensor, usable outside inference mode
    if soft_log_probs.shape != (size, num_classes):
        raise KDistillError(
            f"teacher logits have shape {tuple(source.shape)}, expected "
            f"({size}, {num_classes}) for this transfer set"
        )
    return soft_log_probs


def _file_soft_targets(
    logits_file: TeacherLogitsFile, train: Split | None, stream, config: TrainConfig, classes: int
) -> Tensor:
    """Log soft targets at T of every transfer example under every shift the run can draw,
    ``(V, N, C)``, from a teacher-logits file: row ``view_index(shifts, config.jitter)``."""
    logits_file.check_run(config.jitter, classes)
    if stream is not None and not stream.indexed:
        raise KDistillError(
            "a teacher-logits file is looked up by example index: pass the Dataset itself, "
            "not a DataLoader (whose batches carry no indices)"
        )
    if stream is None:  # by canonical example index, labels checked example by example
        positions = logits_file.positions(train.example_ids, train.labels)
    else:  # a Dataset: its own indices
        positions = logits_file.positions(torch.arange(len(stream)))
    device = resolve_device(config.device)
    table = log_soft_target_table(logits_file, positions, config.jitter, config.temperature, device)
    return table.clone()  # a normal tensor, usable outside inference mode


def _look_up(
    soft_log_probs: Tensor, index: Tensor, shifts: Tensor | None, max_shift: int
) -> Tensor:
    """The cached soft targets of a batch: by example, and by its shifts for a per-view table."""
    if soft_log_probs.dim() == 2:
        return soft_log_probs[index]
    if shifts is None:
        return soft_log_probs[0, index]
    return soft_log_probs[view_index(shifts, max_shift), index]


def _checkpoint_state(
    config: TrainConfig,
    loop: _Loop,
    result: FitResult,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_gen: torch.Generator,
) -> dict:
    """Everything needed to continue the run bit for bit after ``loop.epoch`` epochs."""
    device = data_gen.device
    return {
        "config": asdict(config),
        "epoch": loop.epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_data": data_gen.get_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "history": result.history,
        "best_val": loop.best_val,
        "bad_epochs": loop.bad_epochs,
        "best_epoch": result.best_epoch,
        "best_model": loop.best_state,
        "world_size": distributed.context().world_size,
    }


def _restore(
    checkpoint_dir: str | Path | None,
    config: TrainConfig,
    device: torch.device,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_gen: torch.Generator,
    result: FitResult,
) -> _Loop:
    """Load the checkpoint into the model, optimizer, schedule, generators and ``result``.

    Returns where the epoch loop stood. Rank 0 reads the file and sends it to the other ranks.
    """
    ctx = distributed.context()
    state = distributed.on_main(
        lambda: load_checkpoint(checkpoint_dir, "cpu" if ctx.distributed else device)
    )
    if state.get("world_size", 1) != ctx.world_size:
        raise KDistillError(
            f"the checkpoint in {checkpoint_dir} was made by {state.get('world_size', 1)} "
            f"process(es), not {ctx.world_size}: resume with the same torchrun "
            "--nproc_per_node/--nnodes (the global batch must not change)"
        )
    # settings added to TrainConfig since the checkpoint was saved compare at their defaults
    if {**asdict(TrainConfig()), **state["config"]} != asdict(config):
        raise KDistillError(
            f"the checkpoint in {checkpoint_dir} was made with another config; "
            "resume with the same command, or use a new --out"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    data_gen.set_state(state["rng_data"].cpu())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    result.history, result.best_epoch = state["history"], state["best_epoch"]
    return _Loop(state["epoch"], state["best_val"], state["bad_epochs"], state["best_model"])


def _device_batches(batches, device: torch.device, num_classes: int):
    """Loaded batches moved to ``device``, their labels checked (on the host: no sync)."""
    for index, x, y in batches:
        check_labels(y, num_classes)
        yield (
            index.to(device, non_blocking=True) if index is not None else None,
            x.to(device, non_blocking=True),
            y.to(device, non_blocking=True),
        )


@torch.inference_mode()
def _predict_batches(model: Teacher, source, batch_size: int, bf16: bool) -> tuple[Tensor, Tensor]:
    """Logits (``(N, C)``, or ``(M, N, C)`` for an ensemble) and labels of a batch source."""
    members = as_members(model)
    modes = [m.training for m in members]
    for member in members:
        member.eval()
    device = next(members[0].parameters()).device
    outputs, labels = [[] for _ in members], []
    for _, x, y in source.in_order(batch_size):
        x = x.to(device)
        with _autocast(device, bf16):
            for out, member in zip(outputs, members, strict=True):
                out.append(member(x).float())
        labels.append(y.to(device))
    for member, mode in zip(members, modes, strict=True):
        member.train(mode)
    stacked = torch.stack([torch.cat(out) for out in outputs])
    return (stacked[0] if isinstance(model, nn.Module) else stacked), torch.cat(labels)


def _split_batches(
    images: Tensor,
    labels: Tensor,
    global_batch: int,
    generator: torch.Generator,
    max_shift: int,
    ctx: distributed.Context,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None, float]]:
    """This rank's ``(index, x, y, shifts, share)`` of each global batch of a shuffled epoch.

    ``shifts`` are the jitter shifts ``(B, 2)`` of the examples (None without jitter).
    ``share`` is the shard's weight in the global batch's mean (1 in one process). Jitter shifts
    are drawn for the whole global batch, as one process draws them, so every rank's generator
    stays in step and the shards are those of the one-process run.
    """
    for chunk in batch_indices(len(images), global_batch, generator):
        rows = distributed.shard_slice(len(chunk), ctx.rank, ctx.world_size)
        index, shifts = chunk[rows], None
        if max_shift:
            shifts = random_shifts(len(chunk), max_shift, generator, images.device)[rows]
            x = shift_images(images[index], shifts, max_shift)
        else:
            x = images[index]
        yield index, x, labels[index], shifts, ctx.world_size * len(index) / len(chunk)


def _jittered(
    batches: Iterator[tuple[Tensor | None, Tensor, Tensor]], max_shift: int, generator
) -> Iterator[tuple[Tensor | None, Tensor, Tensor, Tensor | None, float]]:
    for index, x, y in batches:
        if not max_shift:
            yield index, x, y, None, 1.0
            continue
        shifts = random_shifts(len(x), max_shift, generator, x.device)
        yield index, shift_images(x, shifts, max_shift), y, shifts, 1.0


def _online_soft_targets(
    members: list[nn.Module], x: Tensor, config: TrainConfig, device: torch.device
) -> Tensor:
    with torch.inference_mode(), _autocast(device, config.bf16):
        logits = [member(x).float() for member in members]
        log_probs = log_soft_targets(logits[0] if len(logits) == 1 else logits, config.temperature)
    return log_probs.clone()  # an inference tensor cannot be saved for backward


def _check_models(
    model: nn.Module, members: list[nn.Module], probe: Tensor, device: torch.device
) -> int:
    """Run one example through every model: shapes and class counts must agree."""
    probe = probe.to(device)
    with torch.inference_mode():
        outputs = []
        for role, net in [("model", model)] + [("teacher", m) for m in members]:
            was_training = net.training
            net.to(device).eval()
            try:
                out = net(probe)
            except RuntimeError as exc:
                first_line = str(exc).splitlines()[0]
                raise KDistillError(
                    f"the {role} cannot take inputs of shape {tuple(probe.shape[1:])}: {first_line}"
                ) from None
            net.train(was_training)
            if out.dim() != 2:
                raise KDistillError(
                    f"the {role} must return logits of shape (batch, classes), "
                    f"got {tuple(out.shape)}"
                )
            outputs.append(out.shape[1])
    student_classes = outputs[0]
    for teacher_classes in outputs[1:]:
        if teacher_classes != student_classes:
            raise KDistillError(
                f"teacher has {teacher_classes} classes but student has {student_classes}: "
                "both must predict the same classes"
            )
    return student_classes


def _check_finite(losses: Tensor, epoch: int, steps_per_epoch: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        step = int(bad.nonzero()[0])
        raise KDistillError(
            f"loss became non-finite at epoch {epoch + 1}, step {step + 1} "
            f"(global step {epoch * steps_per_epoch + step + 1}); lower the learning rate "
            "or check the inputs for NaN/inf"
        )


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates each tensor in one pass instead of three to five (same update,
    # rounding may differ in the last bit); on CPU it saves ~60% of the optimizer's time.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if config.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None
        )
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
        fused=fused or None,
    )


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))  # noqa: E731
    elif config.schedule == "linear":
        factor = lambda step: max(0.0, 1 - step / total_steps)  # noqa: E731
    elif config.schedule == "exponential":  # lr_decay per epoch, applied smoothly per step
        factor = lambda step: config.lr_decay ** (step * config.epochs / total_steps)  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
