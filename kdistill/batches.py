"""Where fit's batches come from: one interface over its three kinds of training data.

``fit`` trains on an in-memory :class:`~kdistill.data.Split`, a torch ``Dataset`` or a
``DataLoader``. :func:`batch_source` turns each into a :class:`BatchSource` (``SplitSource``,
``DatasetSource``, ``LoaderSource``) whose :meth:`~BatchSource.epoch` yields :class:`Batch` es:
inputs (jittered), labels, the teacher's raw logits for the batch and, under torchrun, this
rank's shard of the global batch with its weight in the global mean. The epoch loop never asks
which kind of data it has.

The teacher's logits come from a lookup that :func:`teacher_lookup` sets on the source once:
none (hard labels), the teacher run online on each batch, a cache by example index (computed
once, or given), or a table by example and jitter shift (from a teacher-logits file, or
computed once in memory: :func:`caches_views` decides).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdistill import distributed
from kdistill.data import (
    DatasetBatches,
    LoaderBatches,
    Split,
    as_batches,
    batch_indices,
    random_shifts,
    shift_images,
    train_val_split,
    view_index,
)
from kdistill.errors import KDistillError
from kdistill.evaluation import (
    Data,
    Teacher,
    as_members,
    autocast,
    predict_batches,
    predict_logits,
)
from kdistill.losses import check_labels
from kdistill.teacher_logits import (
    TeacherLogitsFile,
    compute_teacher_logits,
    raw_logit_table,
    split_sha256,
    tensor_sha256,
)

#: One epoch's raw batches: ``(index, x, y, shifts, examples, share)``, see :class:`Batch`.
RawBatches = Iterator[tuple[Tensor | None, Tensor, Tensor, Tensor | None, int, float]]


@dataclass
class Batch:
    """One training step's data, on the run's device."""

    inputs: Tensor  # jittered when the run jitters
    labels: Tensor
    teacher_logits: Tensor | None  # raw, (B, C) or (M, B, C) for an ensemble; None: no teacher
    examples: int  # the size of the global batch (all ranks together): for the speed shown
    share: float = 1.0  # this shard's weight in the global batch's mean loss (1 in one process)


# --------------------------------------------------------------------------- teacher logits


class NoTeacher:
    """Hard labels: no teacher logits."""

    members = 0

    def __call__(self, index: Tensor | None, x: Tensor, shifts: Tensor | None) -> None:
        return None


@dataclass
class OnlineTeacher:
    """The teacher run on each batch as the student sees it (jittered, augmented)."""

    models: list[nn.Module]
    device: torch.device
    bf16: bool

    @property
    def members(self) -> int:
        return len(self.models)

    def __call__(self, index: Tensor | None, x: Tensor, shifts: Tensor | None) -> Tensor:
        with torch.inference_mode(), autocast(self.device, self.bf16):
            logits = [member(x).float() for member in self.models]
            stacked = logits[0] if len(logits) == 1 else torch.stack(logits)
        return stacked.clone()  # an inference tensor cannot be saved for backward


@dataclass
class CachedLogits:
    """Raw logits of every transfer example, ``(N, C)`` or ``(M, N, C)``, by example index."""

    cache: Tensor

    @property
    def members(self) -> int:
        return self.cache.shape[0] if self.cache.dim() == 3 else 1

    def __call__(self, index: Tensor, x: Tensor, shifts: Tensor | None) -> Tensor:
        return self.cache[index] if self.cache.dim() == 2 else self.cache.index_select(1, index)


@dataclass
class FileViews:
    """A teacher-logits file's logits of every example under every shift the run can draw:
    ``(V, N, C)`` or ``(M, V, N, C)``, looked up by each example's shift and index."""

    table: Tensor
    max_shift: int

    @property
    def members(self) -> int:
        return self.table.shape[0] if self.table.dim() == 4 else 1

    def __call__(self, index: Tensor, x: Tensor, shifts: Tensor | None) -> Tensor:
        views = 0 if shifts is None else view_index(shifts, self.max_shift)
        return self.table[views, index] if self.table.dim() == 3 else self.table[:, views, index]


TeacherLookup = NoTeacher | OnlineTeacher | CachedLogits | FileViews


# --------------------------------------------------------------------------- batch sources


class BatchSource:
    """The transfer set as batches: each epoch's, shuffled (and jittered), with teacher logits.

    Set up in this order by ``fit``: :meth:`first_input` (to check the models),
    :meth:`hold_out`, :meth:`expect_classes`, :meth:`to`, then ``teacher``.
    """

    indexed = True  # batches carry example indices: teacher logits can be cached by them
    steps: int  # batches per epoch

    def __init__(self, max_shift: int) -> None:
        self.max_shift = max_shift
        self.teacher: TeacherLookup = NoTeacher()

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        """This rank's batches of one epoch, shuffled and jittered with ``generator``."""
        for index, x, y, shifts, examples, share in self._batches(generator):
            yield Batch(x, y, self.teacher(index, x, shifts), examples, share)

    def _batches(self, generator: torch.Generator) -> RawBatches:
        raise NotImplementedError

    def first_input(self) -> Tensor:
        """The first example's input, with a batch dimension of 1."""
        raise NotImplementedError

    def hold_out(self, fraction: float, seed: int) -> Split:
        """Split a stratified validation set off the transfer set; returns it."""
        raise KDistillError("val_fraction needs an in-memory Split; pass val= for a Dataset")

    def expect_classes(self, num_classes: int) -> None:
        """Labels must lie in ``[0, num_classes)``: checked now, or as each batch loads."""
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Deliver batches on ``device``."""
        raise NotImplementedError

    def is_deterministic(self) -> bool:
        """Whether an example reads the same every time (no random augmentation)."""
        return True

    def teacher_logits(self, teacher: Teacher, batch_size: int) -> Tensor:
        """The teacher's raw logits of every example in index order, ``(N, C)``/``(M, N, C)``."""
        raise NotImplementedError

    def file_positions(self, logits_file: TeacherLogitsFile) -> Tensor:
        """Each example's row in a teacher-logits file."""
        raise NotImplementedError

    holds_images = False  # every example's image in memory: views can be computed at once

    def teacher_views(self, members: list[nn.Module]) -> Tensor:
        """The members' raw logits of every example (index order) under every jitter shift:
        ``(M, V, N, C)``, view ``view_index(shift, max_shift)``."""
        raise NotImplementedError


class SplitSource(BatchSource):
    """An in-memory Split (the fast path), shuffled by kdistill from the run's generator.

    Under torchrun every rank draws the same order and takes its contiguous shard
    (``distributed.shard_slice``) of each global batch of ``batch_size * world_size``.
    """

    def __init__(self, split: Split, batch_size: int, max_shift: int) -> None:
        super().__init__(max_shift)
        self.split, self.ctx = split, distributed.context()
        self.global_batch = batch_size * self.ctx.world_size
        self.images, self.labels = split.images, split.labels

    def __len__(self) -> int:
        return len(self.split)

    @property
    def steps(self) -> int:
        return math.ceil(len(self.split) / self.global_batch)

    def first_input(self) -> Tensor:
        return self.split.images[:1]

    def hold_out(self, fraction: float, seed: int) -> Split:
        self.split, val = train_val_split(self.split, fraction, seed)
        self.images, self.labels = self.split.images, self.split.labels
        return val

    def expect_classes(self, num_classes: int) -> None:
        check_labels(self.split.labels, num_classes)

    def to(self, device: torch.device) -> None:
        self.images, self.labels = self.split.images.to(device), self.split.labels.to(device)

    def teacher_logits(self, teacher: Teacher, batch_size: int) -> Tensor:
        # each rank runs the teacher on its shard, then all gather
        size, ctx = len(self), self.ctx
        shard = distributed.shard_slice(size, ctx.rank, ctx.world_size)
        logits = predict_logits(teacher, self.images[shard], batch_size)
        return distributed.all_gather_rows(logits, size, dim=-2)

    def file_positions(self, logits_file: TeacherLogitsFile) -> Tensor:
        # by canonical example index, labels checked example by example
        return logits_file.positions(self.split.example_ids, self.split.labels)

    holds_images = True

    def teacher_views(self, members: list[nn.Module]) -> Tensor:
        # each rank computes its shard's views, then all gather (along the examples)
        size, ctx = len(self), self.ctx
        shard = distributed.shard_slice(size, ctx.rank, ctx.world_size)
        views = compute_teacher_logits(members, self.images[shard], self.max_shift)
        return distributed.all_gather_rows(views.to(self.images.device), size, dim=-2)

    def _batches(self, generator: torch.Generator) -> RawBatches:
        """This rank's ``(index, x, y, shifts, examples, share)`` of each global batch.

        ``share`` is the shard's weight in the global batch's mean (1 in one process). Jitter
        shifts are drawn for the whole global batch, as one process draws them, so every rank's
        generator stays in step and the shards are those of the one-process run.
        """
        images, labels, ctx, max_shift = self.images, self.labels, self.ctx, self.max_shift
        for chunk in batch_indices(len(images), self.global_batch, generator):
            rows = distributed.shard_slice(len(chunk), ctx.rank, ctx.world_size)
            index, shifts = chunk[rows], None
            if max_shift:
                shifts = random_shifts(len(chunk), max_shift, generator, images.device)[rows]
                x = shift_images(images[index], shifts, max_shift)
            else:
                x = images[index]
            share = ctx.world_size * len(index) / len(chunk)
            yield index, x, labels[index], shifts, len(chunk), share


class _StreamSource(BatchSource):
    """Batches loaded from a torch Dataset or DataLoader, moved to the device and jittered."""

    def __init__(self, stream: DatasetBatches | LoaderBatches, max_shift: int) -> None:
        super().__init__(max_shift)
        self.stream, self.device, self.num_classes = stream, torch.device("cpu"), 0

    @property
    def steps(self) -> int:
        return self.stream.steps

    def first_input(self) -> Tensor:
        return self.stream.first_input()

    def expect_classes(self, num_classes: int) -> None:
        self.num_classes = num_classes  # checked batch by batch, as they load

    def to(self, device: torch.device) -> None:
        self.device = device

    def _batches(self, generator: torch.Generator) -> RawBatches:
        for index, x, y in self.stream.epoch(generator):
            check_labels(y, self.num_classes)  # on the host: no device sync
            if index is not None:
                index = index.to(self.device, non_blocking=True)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            shifts = None
            if self.max_shift:
                shifts = random_shifts(len(x), self.max_shift, generator, x.device)
                x = shift_images(x, shifts, self.max_shift)
            yield index, x, y, shifts, len(x), 1.0


class DatasetSource(_StreamSource):
    """A map-style torch Dataset, batched and shuffled by kdistill (see ``DatasetBatches``):
    batches carry example indices, so teacher logits can be cached unless it augments."""

    def __len__(self) -> int:
        return len(self.stream)

    def is_deterministic(self) -> bool:
        return self.stream.is_deterministic()

    def teacher_logits(self, teacher: Teacher, batch_size: int) -> Tensor:
        return predict_batches(teacher, self.stream, batch_size, bf16=False)[0]

    def file_positions(self, logits_file: TeacherLogitsFile) -> Tensor:
        return logits_file.positions(torch.arange(len(self)))  # the Dataset's own indices


class LoaderSource(_StreamSource):
    """A user's own DataLoader, used as it is; its batches carry no example indices, so the
    teacher runs online."""

    indexed = False


def batch_source(train: Data, batch_size: int, max_shift: int) -> BatchSource:
    """The batch source of ``fit``'s training data: ``batch_size`` examples per rank and step,
    jitter of up to ``max_shift`` pixels."""
    if isinstance(train, Split):
        return SplitSource(train, batch_size, max_shift)
    stream = as_batches(train, batch_size)
    if distributed.context().distributed:
        raise KDistillError(
            "data-parallel training under torchrun takes an in-memory Split; a Dataset or "
            "DataLoader would need a DistributedSampler, which kdistill does not set up"
        )
    if isinstance(stream, LoaderBatches):
        return LoaderSource(stream, max_shift)
    return DatasetSource(stream, max_shift)


# --------------------------------------------------------------------------- set-up


def teacher_lookup(
    source: BatchSource,
    teacher: Teacher | None,
    given: Tensor | TeacherLogitsFile | None,
    *,
    num_classes: int,
    cache: bool,
    batch_size: int,
    bf16: bool,
    device: torch.device,
    views: bool = False,
    epochs: int = 1,
) -> TeacherLookup:
    """Where each batch's teacher logits come from (``source`` already on ``device``).

    ``given``: logits of every example (always used) or a teacher-logits file. Otherwise the
    teacher's logits are cached (``cache``, ``batch_size`` examples a pass, in fp32) when the
    transfer set is the same every epoch (no jitter, no random transforms) and batches carry
    example indices; under jitter, every example's logits under every shift are computed once
    (in fp32) where ``views`` allows and :func:`caches_views` says it pays over ``epochs``;
    else the teacher runs online (under bf16 autocast when ``bf16``).
    """
    if isinstance(given, TeacherLogitsFile):
        return FileViews(_file_table(source, given, num_classes, device), source.max_shift)
    members = as_members(teacher)
    if not members and given is None:
        return NoTeacher()
    if given is None and caches_views(source, len(members), num_classes, views, epochs):
        table = _views_of(source, members)
        return FileViews(table[0] if len(members) == 1 else table, source.max_shift)
    logits = _cached_logits(source, teacher, given, num_classes, cache, batch_size, device)
    return OnlineTeacher(members, device, bf16) if logits is None else CachedLogits(logits)


# The largest table of jittered views kept in memory (10 members x 25 views of MNIST: 600 MB).
VIEW_CACHE_MAX_BYTES = 2 * 1024**3


def caches_views(
    source: BatchSource, members: int, num_classes: int, allowed: bool, epochs: int
) -> bool:
    """The rule for a jittered transfer set: compute the teacher's logits of every example under
    every shift once, instead of running the teacher on each batch?

    Yes when ``allowed`` (``TrainConfig.cache_jitter_views``), the examples are in memory, the
    (2K + 1)^2 views cost no more teacher passes over the data than the run's ``epochs`` do
    online, and the fp32 table fits :data:`VIEW_CACHE_MAX_BYTES`. Each batch then looks its
    examples' soft targets up by shift, exactly those the online teacher gives (to float
    rounding: the passes are batched differently).
    """
    views = (2 * source.max_shift + 1) ** 2
    if not (allowed and source.max_shift > 0 and source.holds_images and views <= epochs):
        return False
    return 4 * members * views * len(source) * num_classes <= VIEW_CACHE_MAX_BYTES


# The last views table computed in this process, by what it was computed from: the runs of a
# sweep, or of a reproduction worker, that distil one ensemble on one transfer set compute it once.
_last_views: tuple[tuple, Tensor] | None = None


def forget_views() -> None:
    """Free the views table this process keeps for its next run (up to
    :data:`VIEW_CACHE_MAX_BYTES`); the next jittered run computes its own."""
    global _last_views
    _last_views = None


def _views_of(source: SplitSource, members: list[nn.Module]) -> Tensor:
    """``source.teacher_views(members)``, reused from the run before when the members (their
    modules and every weight), the examples, the jitter and the threads are the same, so the
    table is bit for bit the one computing it again would give."""
    global _last_views
    key = (
        split_sha256(source.split),
        str(source.images.device),
        source.max_shift,
        tuple((repr(member), _state_sha256(member)) for member in members),
        torch.get_num_threads(),
    )
    if _last_views is None or _last_views[0] != key:
        _last_views = None  # (the old table freed before the new one is made)
        _last_views = key, source.teacher_views(members).clone()  # not an inference tensor
    return _last_views[1]


def _state_sha256(module: nn.Module) -> tuple[tuple[str, str, str], ...]:
    """Each tensor of ``module``'s state: its name, dtype and sha256."""
    state = module.state_dict().items()
    return tuple((name, str(value.dtype), tensor_sha256(value)) for name, value in state)


def _cached_logits(
    source: BatchSource,
    teacher: Teacher | None,
    given: Tensor | None,
    num_classes: int,
    cache: bool,
    batch_size: int,
    device: torch.device,
) -> Tensor | None:
    """The teacher's raw logits for every transfer example, or None to run it online."""
    if source.max_shift and given is None:
        return None
    if not source.indexed:
        return None
    cacheable = source.is_deterministic()  # (a Dataset reads a few examples twice to tell)
    if given is None and cache and cacheable:
        # cached logits are computed once, in fp32 even for a bf16 run: rounding them to
        # bf16 would perturb every epoch's soft targets for a one-off saving
        given = source.teacher_logits(teacher, batch_size)
    if given is None:
        return None
    logits = given.to(device)
    if logits.dim() == 3 and logits.shape[0] == 1:  # an ensemble of one is one teacher
        logits = logits[0]
    size = len(source)
    if logits.dim() not in (2, 3) or tuple(logits.shape[-2:]) != (size, num_classes):
        raise KDistillError(
            f"teacher logits have shape {tuple(given.shape)}, expected "
            f"({size}, {num_classes}) (or (members, {size}, {num_classes})) for this transfer set"
        )
    return logits.clone()  # a normal tensor, usable outside inference mode


def _file_table(
    source: BatchSource, logits_file: TeacherLogitsFile, num_classes: int, device: torch.device
) -> Tensor:
    """The raw logits of every transfer example under every shift the run can draw, from a
    teacher-logits file: ``(V, N, C)``, or ``(M, V, N, C)`` for an ensemble; view
    ``view_index(shifts, max_shift)``. Examples are looked up by canonical index."""
    logits_file.check_run(source.max_shift, num_classes)
    if not source.indexed:
        raise KDistillError(
            "a teacher-logits file is looked up by example index: pass the Dataset itself, "
            "not a DataLoader (whose batches carry no indices)"
        )
    positions = source.file_positions(logits_file)
    table = raw_logit_table(logits_file, positions, source.max_shift, device)  # (M, V, N, C)
    return table if logits_file.ensemble else table[0]
