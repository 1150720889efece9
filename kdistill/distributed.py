"""Data parallelism on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m kdistill train|distill ...`` runs the same command on N
processes. This module is everything that knows about that: it joins the process group that
torchrun describes in the environment (gloo on CPU, NCCL on CUDA), says which rank this process
is, wraps the model in DDP, gathers the teacher's logits that each rank computed for its own
shard, all-reduces evaluation counts so every rank reports the same test errors, and keeps file
writing and progress bars on rank 0. In a plain process (no torchrun) every helper is the
identity, so single-process training runs exactly the code it ran before.

Equality with one process: rank r of W takes rows ``tensor_split(W)[r]`` of each global batch of
``batch_size * W`` examples, and scales its mean loss by ``W * len(shard) / len(global batch)``
(1.0 for every full batch). DDP averages the gradients, so each step applies the gradient of
the global batch's mean loss, as one process with ``batch_size * W`` would; only the order of the
floating-point sums differs. Dropout masks cannot match (each rank draws its own), see
``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdistill.data import Split
from kdistill.errors import KDistillError
from kdistill.evaluation import evaluate as evaluate_local

T = TypeVar("T")

#: Seconds a collective may wait for a peer before the job fails (``KDISTILL_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job: its rank among ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process (and therefore collectives to run)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0


def context() -> Context:
    """This process's rank and world size, from the initialised process group (or 0 of 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher using its variables) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def refuse_torchrun(command: str) -> None:
    """Stop ``command`` when torchrun started several processes: it is not data-parallel.

    Every process would otherwise run the whole command and write the same folders at once.
    """
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        raise KDistillError(
            f"kdistill {command} runs in one process; launch it without torchrun "
            "(only train and distill are data-parallel)"
        )


def backend_for(device: str) -> str:
    """NCCL when the processes train on CUDA, gloo otherwise (CPU)."""
    uses_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if uses_cuda else "gloo"


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[Context]:
    """Join torchrun's process group for the duration of the block, then leave it.

    Outside torchrun, or with a world of one, nothing is initialised and the context is rank 0
    of 1. On CUDA each process is pinned to the GPU of its ``LOCAL_RANK``. The collective
    timeout (``KDISTILL_DIST_TIMEOUT`` seconds, default 600) bounds how long a rank waits for a
    peer that has stopped answering; torchrun itself stops the job as soon as a rank dies.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        yield Context()
        return
    if dist.is_initialized():  # the caller set up its own group: use it, leave it to them
        yield context()
        return
    backend = backend_for(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        if device.startswith("cuda:"):
            raise KDistillError(
                f"--device {device} names one GPU, but under torchrun each process uses the GPU "
                "of its LOCAL_RANK: pass --device cuda (or auto)"
            )
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(
        seconds=float(os.environ.get("KDISTILL_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    )
    dist.init_process_group(backend, timeout=timeout)
    rank = dist.get_rank()
    try:
        yield context()
        _release_unreachable()
        dist.barrier()  # leave together: no rank tears down while another still needs it
    except KDistillError as exc:  # say which rank failed: torchrun interleaves their output
        raise KDistillError(f"rank {rank}: {exc}") from None
    except RuntimeError as exc:  # a peer died or hung: torchrun names it and stops the job
        if not _is_communication_error(exc):
            raise
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KDistillError(
            f"rank {rank}: lost contact with another rank ({first_line}); "
            "re-run the same torchrun command with --resume to continue from the last checkpoint"
        ) from None
    finally:
        _release_unreachable()  # also after an error: its traceback may hold a DDP wrapper
        dist.destroy_process_group()


def _release_unreachable() -> None:
    """Free cyclic garbage now, while the process group still exists.

    A ``DistributedDataParallel`` wrapper's reducer holds the process group (and with gloo its
    worker threads). ``fit`` drops its wrapper, but a frame that referenced it can stay alive in
    a reference cycle (e.g. an exception's traceback, or one that torch caught while lazily
    importing a module during training); the cycle collector then frees it whenever it next
    runs, possibly only at interpreter exit, after ``destroy_process_group``, where the group's
    C++ teardown can abort the process ("terminate called without an active exception").
    """
    gc.collect()


def _is_communication_error(exc: RuntimeError) -> bool:
    """Whether ``exc`` is a failed collective (DDP's gradient all-reduce raises a bare one)."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        word in text for word in ("gloo", "nccl", "connection closed", "connection reset")
    )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (itself in one process).

    DDP broadcasts rank 0's weights once and then averages gradients during ``backward``.
    """
    if not context().distributed:
        return model
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard_slice(length: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous rows of ``length`` rows, as ``Tensor.tensor_split`` cuts them."""
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all ranks (``tensor`` itself in one process)."""
    if context().distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(rows: Tensor, total: int, dim: int = 0) -> Tensor:
    """Concatenate every rank's contiguous shard (``shard_slice``) of ``total`` rows along ``dim``.

    Shards may differ in length by one; they are padded to the same length for the collective.
    """
    ctx = context()
    if not ctx.distributed:
        return rows
    longest = shard_slice(total, 0, ctx.world_size).stop
    pad = longest - rows.shape[dim]
    if pad:
        shape = list(rows.shape)
        shape[dim] = pad
        rows = torch.cat([rows, rows.new_zeros(shape)], dim=dim)
    pieces = [torch.empty_like(rows) for _ in range(ctx.world_size)]
    dist.all_gather(pieces, rows.contiguous())
    slices = [shard_slice(total, r, ctx.world_size) for r in range(ctx.world_size)]
    return torch.cat(
        [p.narrow(dim, 0, s.stop - s.start) for p, s in zip(pieces, slices, strict=True)], dim=dim
    )


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled over the process group: peers of one job only)."""
    if not context().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 only and share its result; an error is raised on every rank.

    For checks that read rank 0's files (which other machines may not have): all ranks fail
    with the same message instead of rank 0 failing while the others wait for it.
    """
    ctx = context()
    if not ctx.distributed:
        return action()
    result, error = None, None
    if ctx.is_main:
        try:
            result = action()
        except KDistillError as exc:
            error = str(exc)
    result, error = broadcast_from_main((result, error))
    if error is not None:
        raise KDistillError(error)
    return result


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for rank ``rank``'s own randomness (dropout) in ``epoch``, distinct per rank.

    Re-seeding each epoch from (seed, epoch, rank) makes a resumed multi-rank run continue with
    exactly the random numbers it would have drawn, although only rank 0's state is saved.
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


def evaluate(model: nn.Module, split, batch_size: int = 2000, bf16: bool = False) -> dict:
    """:func:`kdistill.evaluation.evaluate`, each rank scoring its shard, the counts all-reduced.

    Every rank returns the same dict. Counts (errors, confusion) are exact; the mean loss is a
    float64 sum of per-rank sums, equal to one process's up to summation order.
    """
    ctx = context()
    if not ctx.distributed or len(split) < ctx.world_size:  # (too few to give each rank one)
        return evaluate_local(model, split, batch_size, bf16)
    rows = shard_slice(len(split), ctx.rank, ctx.world_size)
    shard = Split(split.images[rows], split.labels[rows])
    local = evaluate_local(model, shard, batch_size, bf16)
    loss_sum = local["loss"] * local["examples"] if local["examples"] else 0.0
    device = next(model.parameters()).device
    counts = torch.tensor(
        [
            local["examples"],
            local["errors"],
            *local["per_class_errors"],
            *local["per_class_examples"],
        ]
        + [c for row in local["confusion"] for c in row],
        dtype=torch.int64,
        device=device,
    )
    counts = all_reduce_sum(counts).tolist()
    loss_sum = float(all_reduce_sum(torch.tensor([loss_sum], dtype=torch.float64, device=device)))
    classes = len(local["per_class_errors"])
    examples, errors = counts[0], counts[1]
    confusion = counts[2 + 2 * classes :]
    return {
        "examples": examples,
        "errors": errors,
        # as train.evaluate computes it (float32), so one process and N agree to the last bit
        "accuracy": float(1 - torch.tensor(errors, dtype=torch.float32) / examples)
        if examples
        else float("nan"),
        "loss": loss_sum / examples if examples else float("nan"),
        "per_class_errors": counts[2 : 2 + classes],
        "per_class_examples": counts[2 + classes : 2 + 2 * classes],
        "confusion": [confusion[i * classes : (i + 1) * classes] for i in range(classes)],
    }
