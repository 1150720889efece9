"""The one training loop: a model on hard labels, or a student distilled from a teacher.

``fit`` trains any ``nn.Module`` on an in-memory :class:`~kdistill.data.Split` (the fast path) or
on a ``torch.utils.data.Dataset`` / ``DataLoader`` (for data that does not fit in memory or has
its own transforms). It names no loss: it calls the loss object the config names (or the one
given as ``loss=``), a :class:`~kdistill.losses.DistillationObjective`, with the teacher's raw
logits, sums the terms it returns and logs each. Given a teacher (one model or a list of models,
an ensemble) and a transfer set that is not augmented, the teacher's logits are computed once
and reused every epoch (one cache serves every loss and every temperature), which gives the same
loss as running the teacher online.
With a checkpoint folder it saves every epoch and can resume bit for bit.
Each kind of training data, and the teacher's logits for each batch, is a batch source of
:mod:`kdistill.batches`; scoring (``evaluate``, ``predict_logits``) is in
:mod:`kdistill.evaluation`.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdistill import distributed
from kdistill.batches import Batch, BatchSource, batch_source, teacher_lookup
from kdistill.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from kdistill.compat import config_differences, current_train_config, describe_differences
from kdistill.data import Split
from kdistill.errors import KDistillError
from kdistill.evaluation import Data, Teacher, as_members, autocast
from kdistill.evaluation import evaluate as evaluate  # kdistill.train.evaluate, as before
from kdistill.evaluation import predict_logits as predict_logits  # (also kdistill.train's)
from kdistill.losses import (
    DistillationObjective,
    check_ensemble_support,
    default_loss,
    make_loss,
    sum_terms,
)
from kdistill.losses.registry import DISTILLATION_DEFAULT
from kdistill.models import max_norm_
from kdistill.teacher_logits import TeacherLogitsFile

SCHEDULES = ("cosine", "constant", "linear", "exponential")


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; saved with every run.

    ``loss`` names a registered loss (:data:`kdistill.losses.LOSSES`) and ``loss_args`` its
    arguments, e.g. ``loss="hinton", loss_args={"temperature": 20.0, "alpha": 0.9}`` (alpha
    is the weight of the soft-target term; 1 = soft targets only, as in the paper's MNIST
    students). ``loss=None`` means ``"hinton"`` with a teacher and ``"cross-entropy"``
    without; a run records the loss it used, with every argument.
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
    loss: str | None = None  # registered loss name; None: "hinton" / "cross-entropy" (no teacher)
    loss_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"temperature": 20.0}
    val_fraction: float = 0.0  # stratified hold-out from the training split
    patience: int | None = None  # early stopping: epochs without a better validation error
    seed: int = 0
    eval_batch_size: int = 2000
    test_every: int = 1  # score the test set after every N-th epoch (and the last) for history
    cache_teacher_logits: bool = True
    # under jitter, the teacher's logits of every example under every shift, computed once
    # (when that costs fewer teacher passes than the epochs: kdistill.batches.caches_views)
    cache_jitter_views: bool = True
    bf16: bool = False  # bf16 autocast for forward passes; weights stay fp32
    device: str = "auto"

    def validate(self) -> None:
        """Raise a clear error on a setting that cannot work (the loss checks its own)."""
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
        if self.test_every < 1:
            raise KDistillError(
                f"test_every (--test-every) must be >= 1 epoch, got {self.test_every}"
            )
        if self.patience is not None and self.val_fraction == 0:
            raise KDistillError(
                "early stopping (patience) needs a validation split: set val_fraction"
            )
        if self.loss is not None or self.loss_args:  # arguments without a name: the default's
            make_loss(self.loss or DISTILLATION_DEFAULT, **self.loss_args)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, distilling: bool) -> TrainConfig:
        """A config saved by any kdistill version (see :mod:`kdistill.compat`)."""
        return cls(**current_train_config(data, distilling=distilling))

    def make_loss(self, distilling: bool) -> DistillationObjective:
        """The loss object this config names (the default one for ``distilling`` if none)."""
        if self.loss is None and self.loss_args and not distilling:
            raise KDistillError(
                f"loss_args {self.loss_args} but no teacher: hard labels (the "
                f"{default_loss(False)!r} loss) take no arguments; give a teacher, or no loss_args"
            )
        return make_loss(self.loss or default_loss(distilling), **self.loss_args)

    def with_loss(self, loss: DistillationObjective) -> TrainConfig:
        """This config naming ``loss`` and all its arguments, as runs record it."""
        return replace(self, loss=loss.name, loss_args=loss.arguments())


@dataclass
class FitResult:
    """What a finished ``fit`` returns: one history row per epoch and the final evaluation;
    ``seconds``: the time fit spent, summed over every invocation of a resumed run."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    # The test scores (:func:`~kdistill.evaluation.evaluate`) of the weights fit returns, where
    # fit scored them itself (its last epoch, no best epoch restored): a run reuses them instead
    # of scoring the test set once more (issue 15).
    test: dict | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; a device this machine lacks is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise KDistillError(
            f"unknown device {name!r}: use cpu, cuda, cuda:N, mps or auto (--device)"
        ) from None
    available = {
        "cpu": lambda: True,
        "cuda": lambda: (
            torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
        ),
        "mps": lambda: torch.backends.mps.is_available(),
    }
    if not available.get(device.type, lambda: False)():
        raise KDistillError(
            f"device {name!r} is not available on this machine: use --device cpu (or auto)"
        )
    return device


def fit(
    model: nn.Module,
    train: Data,
    config: TrainConfig,
    *,
    teacher: Teacher | None = None,
    teacher_logits: Tensor | TeacherLogitsFile | None = None,
    loss: DistillationObjective | None = None,
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
        config: optimisation settings and the loss (``config.loss``, ``config.loss_args``).
        teacher: a trained model or a list of them (an ensemble); frozen, run in eval mode.
        teacher_logits: precomputed teacher logits for ``train``, ``(N, C)`` or ``(M, N, C)``
            in example order (e.g. shared by every cell of a sweep); computed here when
            caching applies. Or a :class:`~kdistill.teacher_logits.TeacherLogitsFile` (then no
            teacher is needed): looked up by each example's canonical index
            (``train.example_ids``) and, with jitter, by each example's shift.
        loss: a loss object to use instead of the one the config names (then the config
            names none); checkpoints record its name and ``arguments()``.
        test: scored after every ``config.test_every``-th epoch and the last (reported only;
            never used to choose anything).
        val: held-out split for early stopping; if None and ``config.val_fraction`` > 0 it is
            split off ``train`` (stratified, seeded).
        checkpoint_dir: save a checkpoint there after every epoch.
        resume: continue from the checkpoint in ``checkpoint_dir``.
        progress: show a progress bar (on a terminal): steps, loss, errors, examples/s.
        on_epoch: called after each epoch with the history so far.

    Returns:
        The history (``train_loss`` and, per term of the loss, e.g. ``train_soft``, its epoch
        mean) and, with early stopping, the best epoch (whose weights ``model`` holds).

    Under torchrun (an initialised process group) it trains data-parallel with DDP:
    ``config.batch_size`` is per rank, every rank returns the same history, and only rank 0
    writes checkpoints and shows progress (see :mod:`kdistill.distributed`).
    """
    config.validate()
    distilling = bool(as_members(teacher)) or teacher_logits is not None
    objective, config = _loss_and_config(config, loss, distilling)
    run = _prepare(model, train, config, objective, teacher, teacher_logits, val)
    result = FitResult()
    loop = _start(run, result, checkpoint_dir, resume)
    loop.started = time.perf_counter()
    _train_epochs(run, loop, result, test, checkpoint_dir, on_epoch, progress)
    if loop.best_state is not None and config.patience is not None:
        model.load_state_dict(loop.best_state)
        result.test = None  # the scores of other weights
    result.seconds = loop.seconds()
    return result


@dataclass
class _Loop:
    """Where the epoch loop stands: what a checkpoint must restore besides the weights."""

    epoch: int = 0  # epochs done
    best_val: float = math.inf
    bad_epochs: int = 0
    best_state: dict | None = None  # weights at the best validation error
    # seconds of fit before this invocation (up to the checkpoint it resumed), and when this
    # invocation's epochs started: a resumed run's time is that of all its invocations
    seconds_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        """Seconds of fit so far, over every invocation of the run."""
        return self.seconds_before + time.perf_counter() - self.started


@dataclass
class _Run:
    """What every epoch of one ``fit`` works with, set up once by :func:`_prepare`."""

    config: TrainConfig
    ctx: distributed.Context
    device: torch.device
    model: nn.Module
    objective: DistillationObjective
    distilling: bool
    batches: BatchSource  # each epoch's batches, with the teacher's logits of each
    val: Split | None
    num_classes: int
    data_gen: torch.Generator  # shuffles and jitters the transfer set
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    net: nn.Module | None = None  # the model as trained (DDP-wrapped under torchrun)


def _loss_and_config(
    config: TrainConfig, loss: DistillationObjective | None, distilling: bool
) -> tuple[DistillationObjective, TrainConfig]:
    """The loss object, and the config naming it with all its arguments (what is saved)."""
    if loss is None:
        objective = config.make_loss(distilling)
    elif not isinstance(loss, DistillationObjective):
        raise KDistillError(
            "loss= takes a kdistill.losses.DistillationObjective, e.g. "
            f"make_loss('hinton', temperature=4.0); got {type(loss).__name__}"
        )
    elif config.loss is not None or config.loss_args:
        raise KDistillError("give the loss as loss= or in the config (loss, loss_args), not both")
    else:
        objective = loss
    return objective, config.with_loss(objective)


def _prepare(
    model: nn.Module,
    train: Data,
    config: TrainConfig,
    objective: DistillationObjective,
    teacher: Teacher | None,
    teacher_logits: Tensor | TeacherLogitsFile | None,
    val: Split | None,
) -> _Run:
    """Check the models and data, seed, and build the batches, optimizer and schedule."""
    ctx, device, members = distributed.context(), resolve_device(config.device), as_members(teacher)
    batches = batch_source(train, config.batch_size, config.jitter)
    probe = batches.first_input()
    num_classes = _check_models(model, members, probe, device)
    objective.to(device)
    if not members and teacher_logits is None:  # a loss that needs a teacher says so now
        _try_loss(objective, model, probe.to(device))
    check_ensemble_support(objective, len(members))
    if val is None and config.val_fraction > 0:
        val = batches.hold_out(config.val_fraction, config.seed)
    batches.expect_classes(num_classes)
    if teacher_logits is not None and not batches.indexed:
        raise KDistillError(
            "teacher_logits are looked up by example index: pass the Dataset itself, not a "
            "DataLoader (whose batches carry no indices)"
        )

    torch.manual_seed(config.seed)
    model.to(device)
    for member in members:
        member.to(device).eval().requires_grad_(False)
    data_gen = torch.Generator(device=device).manual_seed(config.seed)
    batches.to(device)
    batches.teacher = teacher_lookup(
        batches, teacher, teacher_logits, num_classes=num_classes,
        cache=config.cache_teacher_logits, batch_size=config.eval_batch_size, bf16=config.bf16,
        device=device, views=config.cache_jitter_views and config.cache_teacher_logits,
        epochs=config.epochs,
    )  # fmt: skip
    check_ensemble_support(objective, batches.teacher.members)
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config, batches.steps * config.epochs)
    return _Run(
        config=config, ctx=ctx, device=device, model=model, objective=objective,
        distilling=bool(members) or teacher_logits is not None, batches=batches, val=val,
        num_classes=num_classes, data_gen=data_gen, optimizer=optimizer, scheduler=scheduler,
        steps_per_epoch=batches.steps,
    )  # fmt: skip


def _start(run: _Run, result: FitResult, checkpoint_dir: str | Path | None, resume: bool) -> _Loop:
    """Where the epoch loop starts: restored from the checkpoint, or from scratch (refused
    where a checkpoint would be overwritten)."""
    if resume:
        return _restore(checkpoint_dir, run, result)
    if checkpoint_dir is not None and distributed.on_main(lambda: has_checkpoint(checkpoint_dir)):
        raise KDistillError(
            f"{checkpoint_dir} already holds a checkpoint: pass --resume to continue it, "
            "or choose a new --out"
        )
    return _Loop()


def _train_epochs(
    run: _Run,
    loop: _Loop,
    result: FitResult,
    test: Data | None,
    checkpoint_dir: str | Path | None,
    on_epoch: Callable[[list[dict]], None] | None,
    show_progress: bool,
) -> None:
    """The epochs left: after each, score val and test, record, checkpoint, maybe stop early."""
    config, model = run.config, run.model
    progress = _Progress(run, loop.epoch, show_progress)
    try:
        run.net = distributed.wrap(model, run.device)  # DDP averages gradients across ranks
        for epoch in range(loop.epoch, config.epochs):
            row = _train_epoch(run, epoch, progress)
            # the test set only every test_every epochs: on a small transfer set scoring all of it
            # each epoch can cost more than the epoch (validation, which may stop the run: always)
            tested = (epoch + 1) % config.test_every == 0 or epoch + 1 == config.epochs
            _score_epoch(run, row, result, test if tested else None)
            result.history.append(row)
            progress.show_epoch(row)
            loop.epoch = epoch + 1
            stop = _early_stopping(loop, row, result, model, config)
            if checkpoint_dir is not None and run.ctx.is_main:
                save_checkpoint(checkpoint_dir, _checkpoint_state(run, loop, result), epoch + 1)
            if on_epoch is not None:
                on_epoch(result.history)
            if stop:
                result.stopped_early = True
                break
    finally:  # also on Ctrl-C or an error: clear the bar, so a message starts on its own line
        progress.close()
        # Drop the DDP wrapper now, on every path: its reducer holds the process group, whose
        # gloo threads must not outlive distributed.process_group's destroy_process_group
        # (the fit frame, and so `run`, can stay referenced by cyclic garbage until exit).
        run.net = None


def _score_epoch(run: _Run, row: dict, result: FitResult, test: Data | None) -> None:
    """Score the validation split and ``test`` (``None``: not this epoch) into ``row``; keep
    the test scores in ``result`` (those of the current weights only)."""
    if run.val is not None:
        scored = distributed.evaluate(run.model, run.val, run.config.eval_batch_size)
        row["val_errors"], row["val_loss"] = scored["errors"], scored["loss"]
    result.test = None
    if test is not None:
        result.test = distributed.evaluate(run.model, test, run.config.eval_batch_size)
        row["test_errors"], row["test_loss"] = result.test["errors"], result.test["loss"]


def _train_epoch(run: _Run, epoch: int, progress: _Progress) -> dict:
    """One epoch of steps; its history row: lr, mean loss, each term's mean, seconds."""
    config, ctx = run.config, run.ctx
    run.model.train()
    run.objective.on_epoch(epoch, config.epochs)
    epoch_start = time.perf_counter()
    progress.start_epoch()
    if ctx.distributed:  # each rank its own dropout masks, reproducible on resume
        torch.manual_seed(distributed.rank_seed(config.seed, epoch, ctx.rank))
    epoch_lr = run.optimizer.param_groups[0]["lr"]  # the rate this epoch starts with
    temperature = float(run.objective.arguments().get("temperature", 1.0))
    limit = _loss_limit(run.num_classes, temperature)
    step_losses = torch.zeros(run.steps_per_epoch, device=run.device)
    step_terms: dict[str, Tensor] = {}  # a term a step leaves out counts as 0 there
    for step, batch in enumerate(run.batches.epoch(run.data_gen)):
        loss, terms = _train_step(run, batch)
        step_losses[step] = loss
        for name, value in terms.items():
            if name not in step_terms:
                step_terms[name] = torch.zeros(run.steps_per_epoch, device=run.device)
            step_terms[name][step] = value
        if step % 100 == 99:  # one device sync per 100 steps
            _check_finite(step_losses[: step + 1], epoch, run.steps_per_epoch, limit)
        progress.step(batch.examples)
    _check_finite(step_losses, epoch, run.steps_per_epoch, limit)
    per_step = [step_losses, *step_terms.values()]
    if ctx.distributed:  # sum of the ranks' weighted shard losses / W = global batch loss
        per_step = list(distributed.all_reduce_sum(torch.stack(per_step)) / ctx.world_size)
    means = [float(losses.mean()) for losses in per_step]
    return {
        "epoch": epoch + 1,
        "lr": epoch_lr,
        "train_loss": means[0],
        **{f"train_{name}": mean for name, mean in zip(step_terms, means[1:], strict=True)},
        "seconds": round(time.perf_counter() - epoch_start, 3),
    }


def _train_step(run: _Run, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimizer step; returns the (detached) loss and its terms."""
    config = run.config
    with autocast(run.device, config.bf16):
        logits = run.net(batch.inputs).float()
    terms = run.objective(logits, batch.teacher_logits, batch.labels)
    loss = sum_terms(terms)
    if run.ctx.distributed:  # this shard's weight in the global batch's mean loss
        if len(batch.labels):
            loss, terms = loss * batch.share, {k: v * batch.share for k, v in terms.items()}
        else:  # an empty shard (fewer examples left than ranks) still joins the all-reduce
            loss, terms = 0 * logits.sum(), {k: torch.zeros_like(v) for k, v in terms.items()}
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:  # no host sync: the norm stays on the device
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip, foreach=True)
    run.optimizer.step()
    run.scheduler.step()
    if config.max_norm is not None:
        max_norm_(run.model, config.max_norm)
    return loss.detach(), {k: v.detach() for k, v in terms.items()}


class _Progress:
    """The step progress bar (rank 0 only), with the training speed in examples per second.

    Only on a terminal: where stderr is a file or a pipe (a log, CI) a bar would write a line per
    update, so there is none (``disable=None``). The speed counts the examples of the epoch's
    training steps so far (evaluation excluded), refreshed every ``RATE_EVERY_S`` seconds and at
    the end of each epoch, beside that epoch's loss and errors.
    """

    RATE_EVERY_S = 0.5
    SHOWN = ("train_loss", "val_errors", "test_errors")  # of each epoch's history row

    def __init__(self, run: _Run, epochs_done: int, show: bool) -> None:
        self.bar = tqdm(
            total=run.steps_per_epoch * run.config.epochs,
            initial=run.steps_per_epoch * epochs_done,  # a resumed run starts where it stopped
            disable=None if show and run.ctx.is_main else True,
            desc="distill" if run.distilling else "train",
            unit="step",
            leave=False,
            dynamic_ncols=True,
        )
        self.postfix: dict[str, Any] = {}
        self.examples, self.started, self.last_step, self.shown = 0, 0.0, 0.0, 0.0

    def start_epoch(self) -> None:
        self.examples, self.started = 0, time.perf_counter()
        self.last_step = self.shown = self.started

    def step(self, examples: int) -> None:
        """One step of ``examples`` examples (the global batch) done."""
        self.bar.update()
        if self.bar.disable:
            return
        self.examples += examples
        self.last_step = time.perf_counter()
        if self.last_step - self.shown >= self.RATE_EVERY_S:
            self._show(refresh=False)  # drawn with the bar's next update

    def show_epoch(self, row: dict) -> None:
        """The epoch's speed, loss and errors (from its history ``row``)."""
        self.postfix = {k: row[k] for k in self.SHOWN if k in row}
        self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        seconds = max(self.last_step - self.started, 1e-9)
        rate = {"examples/s": f"{self.examples / seconds:.0f}"} if self.examples else {}
        self.bar.set_postfix({**self.postfix, **rate}, refresh=refresh)
        self.shown = self.last_step

    def close(self) -> None:
        """Close the bar and, when no other bar is open, stop tqdm's monitor thread.

        tqdm starts a ``tqdm_monitor`` thread with the first bar (even a disabled one) and leaves
        it running until the interpreter exits; fit stops it so that no thread of its own is
        alive at exit (under torchrun, exit follows ``destroy_process_group``). The next bar
        starts a new one.
        """
        bar = self.bar
        bar.close()
        cls = type(bar)
        monitor = getattr(cls, "monitor", None)
        if monitor is not None and not getattr(cls, "_instances", True):
            with cls.get_lock():
                cls.monitor = None
            monitor.exit()


def _early_stopping(
    loop: _Loop, row: dict, result: FitResult, model: nn.Module, config: TrainConfig
) -> bool:
    """Track the best validation epoch (and its weights); whether patience has run out."""
    if "val_errors" not in row:
        return False
    if row["val_errors"] < loop.best_val:
        loop.best_val, loop.bad_epochs, result.best_epoch = row["val_errors"], 0, row["epoch"]
        loop.best_state = copy.deepcopy(model.state_dict())
        return False
    loop.bad_epochs += 1
    return config.patience is not None and loop.bad_epochs >= config.patience


def _checkpoint_state(run: _Run, loop: _Loop, result: FitResult) -> dict:
    """Everything needed to continue the run bit for bit after ``loop.epoch`` epochs."""
    device = run.data_gen.device
    return {
        "config": asdict(run.config),
        "epoch": loop.epoch,
        "model": run.model.state_dict(),
        "loss_state": run.objective.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_data": run.data_gen.get_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "history": result.history,
        "best_val": loop.best_val,
        "bad_epochs": loop.bad_epochs,
        "best_epoch": result.best_epoch,
        "best_model": loop.best_state,
        "world_size": run.ctx.world_size,
        "seconds": loop.seconds(),
    }


def _restore(checkpoint_dir: str | Path | None, run: _Run, result: FitResult) -> _Loop:
    """Load the checkpoint into the model, loss, optimizer, schedule, generators and ``result``.

    Returns where the epoch loop stood. Rank 0 reads the file and sends it to the other ranks.
    A checkpoint saved by an earlier version (before a setting existed, or with the
    temperature and alpha beside the other settings) is read in today's form.
    """
    ctx, device = run.ctx, run.device
    state = distributed.on_main(
        lambda: load_checkpoint(checkpoint_dir, "cpu" if ctx.distributed else device)
    )
    if state.get("world_size", 1) != ctx.world_size:
        raise KDistillError(
            f"the checkpoint in {checkpoint_dir} was made by {state.get('world_size', 1)} "
            f"process(es), not {ctx.world_size}: resume with the same torchrun "
            "--nproc_per_node/--nnodes (the global batch must not change)"
        )
    differences = config_differences(state["config"], asdict(run.config), distilling=run.distilling)
    if differences:
        raise KDistillError(
            f"the checkpoint in {checkpoint_dir} was made with another config "
            f"({describe_differences(differences)}); resume with the same command, "
            "or use a new --out"
        )
    run.model.load_state_dict(state["model"])
    run.objective.load_state_dict(state.get("loss_state", {}))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    run.data_gen.set_state(state["rng_data"].cpu())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    result.history, result.best_epoch = state["history"], state["best_epoch"]
    return _Loop(
        state["epoch"],
        state["best_val"],
        state["bad_epochs"],
        state["best_model"],
        seconds_before=state.get("seconds", 0.0),  # not recorded before 2026-11-27
    )


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


def _try_loss(objective: DistillationObjective, model: nn.Module, probe: Tensor) -> None:
    """Call the loss once on one example without a teacher, so it fails before training."""
    was_training = model.training
    with torch.inference_mode():
        model.eval()
        labels = torch.zeros(len(probe), dtype=torch.long, device=probe.device)
        objective(model(probe).float(), None, labels)
    model.train(was_training)


def _loss_limit(num_classes: int, temperature: float) -> float:
    """A loss no sane run reaches: 10^4 times that of uniform predictions (times T^2)."""
    return 1e4 * math.log(max(num_classes, 2)) * max(1.0, temperature**2)


def _check_finite(
    losses: Tensor, epoch: int, steps_per_epoch: int, limit: float = math.inf
) -> None:
    """Stop a diverged run: a loss that is not finite, or above ``limit`` (it exploded)."""
    bad = ~torch.isfinite(losses) | (losses > limit)
    if bool(bad.any()):
        step = int(bad.nonzero()[0])
        where = (
            f"at epoch {epoch + 1}, step {step + 1} "
            f"(global step {epoch * steps_per_epoch + step + 1})"
        )
        value = float(losses[step])
        what = (
            f"loss became non-finite {where}"
            if not math.isfinite(value)
            else f"training diverged: the loss reached {value:.3g} {where}"
        )
        kept = f"; the checkpoint of epoch {epoch} (the last good one) is kept" if epoch else ""
        raise KDistillError(
            f"{what}; start again with a lower learning rate (--lr) or clipped gradients "
            f"(--grad-clip 1), or check the inputs for NaN/inf{kept}"
        )


# What torch.optim imports when the first optimizer is built: its compiler stack, about a second
# of a short run's fixed cost (issue 15). A command may start importing it early, in a thread.
OPTIMIZER_IMPORTS = ("torch._dynamo",)
_early_imports: threading.Thread | None = None


def start_optimizer_imports() -> None:
    """Start importing :data:`OPTIMIZER_IMPORTS` in a background thread, so that it overlaps the
    data decode and the teacher's logits (which release the GIL); the first optimizer waits for
    it. Call once, after the command's own imports; a second call does nothing."""
    global _early_imports
    if _early_imports is not None or all(name in sys.modules for name in OPTIMIZER_IMPORTS):
        return

    def run() -> None:
        for name in OPTIMIZER_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 (the optimizer will import it again, and say why)
                return

    _early_imports = threading.Thread(target=run, name="kdistill-imports", daemon=True)
    _early_imports.start()


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if _early_imports is not None:
        _early_imports.join()  # never import the same modules from two threads at once
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
