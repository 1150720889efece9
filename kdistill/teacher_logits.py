"""Teacher-logits files: a teacher's outputs computed once, on every jitter shift, for reuse.

A file holds the logits of a teacher (or of each ensemble member) for every example of a
dataset's training split, in its canonical order, under every integer shift ``(dy, dx)`` in
[-K, K]² (a *view*; K = 0 is the unshifted data alone). Students then distil from the file
with no teacher model loaded: each example's shift picks its view, so a jittered transfer set
trains at cached speed and sees exactly the soft targets the online teacher would give.

Format (safetensors: tensors and string metadata, loaded without executing any code):

- ``logits``: ``(V, N, C)`` for one teacher, ``(M, V, N, C)`` for an ensemble of M, stored in
  float32 (default) or float16. View ``v`` is shift ``views[v]``; for the full grid of K,
  shift ``(dy, dx)`` is view ``(dy + K) * (2K + 1) + (dx + K)`` (dy: rows, dx: columns;
  output pixel ``(i, j)`` is input pixel ``(i + dy, j + dx)``, 0 outside, as
  :func:`kdistill.data.shift_images`).
- ``example_index``: ``(N,)`` the canonical index of each stored example; ``labels``: ``(N,)``
  their labels (a cheap check that a transfer set matches the file, example by example).
- metadata: format and version, dataset name, its files' sha256, ``data_sha256`` (sha256 of the
  training split's labels and images as loaded, in order: the example order), each teacher's
  weight sha256, the views (JSON list of ``[dy, dx]``), the dtype, the class count, the sha256
  of every tensor's bytes and of the metadata itself (so a flipped byte anywhere is caught).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

import kdistill
from kdistill.checkpoint import atomic_write
from kdistill.data import IDX_DATASETS, Dataset, Split, shift_grid, shift_images, view_index
from kdistill.errors import KDistillError

FORMAT = "kdistill-teacher-logits"
VERSION = "1"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
SHIFT_CONVENTION = "output[i, j] = input[i + dy, j + dx], 0 outside; view = (dy+K)*(2K+1)+(dx+K)"


@dataclass(frozen=True)
class DatasetIdentity:
    """What a teacher-logits file must have been written for: the dataset and its order."""

    name: str
    data_sha256: str  # the training split's labels and images as loaded, in order
    num_examples: int
    num_classes: int
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 (IDX datasets)


def split_sha256(split: Split) -> str:
    """sha256 of a split's labels then images (int64 and float32 bytes), in example order."""
    digest = hashlib.sha256()
    digest.update(split.labels.cpu().contiguous().numpy().tobytes())
    digest.update(split.images.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def dataset_identity(dataset: Dataset) -> DatasetIdentity:
    """The identity of ``dataset``'s training split (hashes its ~190 MB for MNIST: ~0.3 s)."""
    spec = IDX_DATASETS.get(dataset.name)
    files = {f.name: f.sha256 for f in (spec.train_images, spec.train_labels)} if spec else {}
    return DatasetIdentity(
        name=dataset.name,
        data_sha256=split_sha256(dataset.train),
        num_examples=len(dataset.train),
        num_classes=dataset.num_classes,
        files=files,
    )


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(teacher: str | Path) -> str:
    """The sha256 of a teacher's weights: a run's model.safetensors, or the state_dict file.

    Also :func:`kdistill.runs.weights_sha256`, what a student's run records of its teachers.
    """
    path = Path(teacher)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        return file_sha256(path)
    except OSError as exc:
        raise KDistillError(
            f"cannot read the teacher's weights {path}: {exc.strerror}; is the teacher run "
            "finished?"
        ) from None


# --------------------------------------------------------------------------- computing


@torch.inference_mode()
def predict_in_blocks(
    model: nn.Module | Sequence[nn.Module],
    images: Tensor,
    block: int,
    *,
    bf16: bool = False,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    dim: int = 0,
) -> Tensor:
    """Logits of a model, or of each member of a list (an ensemble), ``block`` examples a pass.

    Each member runs in eval mode (its mode is restored after) on its own device, under bf16
    autocast when ``bf16``. ``forward(member, x)`` turns a block ``x`` (on that device) into its
    float32 logits, by default ``member(x).float()``; the blocks' are concatenated along ``dim``.

    Returns:
        The concatenation for one model, its stack ``(M, ...)`` for a list.
    """
    members = [model] if isinstance(model, nn.Module) else list(model)
    outputs = []
    for member in members:
        was_training = member.training
        member.eval()
        device = next(member.parameters()).device
        chunks = []
        for start in range(0, len(images), block):
            x = images[start : start + block].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                chunks.append(forward(member, x) if forward else member(x).float())
        member.train(was_training)
        outputs.append(torch.cat(chunks, dim=dim))
    stacked = torch.stack(outputs)
    return stacked[0] if isinstance(model, nn.Module) else stacked


@torch.inference_mode()
def compute_teacher_logits(
    teacher: nn.Module | Sequence[nn.Module],
    images: Tensor,
    max_shift: int,
    *,
    rows_per_pass: int = 10_000,
    bf16: bool = False,
) -> Tensor:
    """Logits of ``teacher`` on every example under every shift of :func:`shift_grid`.

    Each forward pass takes all ``V`` views of a block of examples (about ``rows_per_pass``
    rows), shifted by :func:`~kdistill.data.shift_images` exactly as jitter shifts them.

    Returns:
        ``(V, N, C)`` float32 for one model, ``(M, V, N, C)`` for a list (an ensemble).
    """
    if not isinstance(teacher, nn.Module) and not list(teacher):
        raise KDistillError("no teacher to compute logits of")
    views = torch.tensor(shift_grid(max_shift))  # (V, 2)

    def every_view(member: nn.Module, x: Tensor) -> Tensor:
        shifts = views.repeat_interleave(len(x), 0)  # view-major rows
        shifted = shift_images(x.repeat(len(views), 1, 1, 1), shifts, max_shift)
        return member(shifted).float().reshape(len(views), len(x), -1).cpu()

    block = max(1, rows_per_pass // len(views))
    return predict_in_blocks(teacher, images, block, bf16=bf16, forward=every_view, dim=1)


# --------------------------------------------------------------------------- writing


def write_teacher_logits(
    path: str | Path,
    logits: Tensor,
    *,
    identity: DatasetIdentity,
    labels: Tensor,
    max_shift: int,
    teachers: Sequence[dict],
    dtype: str = "float32",
    compute: str = "fp32",
) -> str:
    """Write a teacher-logits file atomically (temp file + rename) and return its sha256.

    Args:
        path: the file to write.
        logits: ``(V, N, C)`` or ``(M, V, N, C)``, V the views of ``shift_grid(max_shift)`` and
            N every example of the dataset's training split, in canonical order.
        identity: the dataset the logits are of (see :func:`dataset_identity`).
        labels: ``(N,)`` the training split's labels.
        max_shift: K, the jitter the views cover.
        teachers: one dict per member, e.g. ``{"source": ..., "weights_sha256": ...}``.
        dtype: ``float32`` or ``float16`` (half the size; rounds each logit to ~3 digits).
        compute: how the logits were computed (``fp32`` or ``bf16-autocast``), recorded.
    """
    if dtype not in DTYPES:
        raise KDistillError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    views = shift_grid(max_shift)
    expected = (len(views), identity.num_examples, identity.num_classes)
    if logits.dim() not in (3, 4) or tuple(logits.shape[-3:]) != expected:
        raise KDistillError(f"logits of shape {tuple(logits.shape)}, expected (M,) {expected}")
    members = 1 if logits.dim() == 3 else logits.shape[0]
    if len(teachers) != members:
        raise KDistillError(f"{len(teachers)} teacher records for {members} member(s)")
    tensors = {
        "logits": logits.detach().to("cpu", DTYPES[dtype]).contiguous(),
        "example_index": torch.arange(identity.num_examples, dtype=torch.int64),
        "labels": labels.detach().to("cpu", torch.int64).contiguous(),
    }
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": identity.name,
        "dataset_files": json.dumps(identity.files, sort_keys=True),
        "data_sha256": identity.data_sha256,
        "num_examples": str(identity.num_examples),
        "num_classes": str(identity.num_classes),
        "members": str(members),
        "ensemble": json.dumps(logits.dim() == 4),
        "teachers": json.dumps(list(teachers)),
        "max_shift": str(max_shift),
        "views": json.dumps([list(v) for v in views]),
        "shift_convention": SHIFT_CONVENTION,
        "dtype": dtype,
        "compute": compute,
        "tensors_sha256": json.dumps({k: tensor_sha256(v) for k, v in tensors.items()}),
        "kdistill": kdistill.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    metadata["metadata_sha256"] = _metadata_sha256(metadata)
    payload = safetensors_save(tensors, metadata)
    atomic_write(path, payload)
    return hashlib.sha256(payload).hexdigest()


def tensor_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's bytes (any dtype or device), in its logical order."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy()).hexdigest()


def _metadata_sha256(metadata: dict[str, str]) -> str:
    rest = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- reading


@dataclass
class TeacherLogitsFile:
    """A teacher-logits file, read and verified (see :func:`read_teacher_logits`)."""

    path: Path
    sha256: str  # of the file's bytes: what a student's run records
    logits: Tensor  # (M, V, N, C) in the stored dtype (M = 1 for one teacher)
    example_index: Tensor  # (N,) canonical index of each stored example
    labels: Tensor  # (N,)
    metadata: dict[str, str]
    ensemble: bool  # written for a list of teachers (soft targets: mean of probabilities)

    @property
    def dataset(self) -> str:
        """The name of the dataset the file was written for."""
        return self.metadata["dataset"]

    @property
    def max_shift(self) -> int:
        """K: the file holds every shift in [-K, K]²."""
        return int(self.metadata["max_shift"])

    @property
    def num_classes(self) -> int:
        """C, the number of classes (outputs) of the teacher."""
        return int(self.logits.shape[-1])

    @property
    def teachers(self) -> list[dict]:
        """One record per member: where it came from and the sha256 of its weights."""
        return json.loads(self.metadata["teachers"])

    def describe(self) -> dict:
        """What a student's run records about the file."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "dataset": self.dataset,
            "max_shift": self.max_shift,
            "dtype": self.metadata["dtype"],
            "teachers_sha256": [t.get("weights_sha256") for t in self.teachers],
        }

    def check_run(self, max_shift: int, num_classes: int) -> None:
        """Refuse a run whose jitter exceeds the file's views or whose class count differs."""
        if max_shift > self.max_shift:
            raise KDistillError(
                f"teacher-logits file {self.path} holds shifts up to {self.max_shift} pixel(s), "
                f"not the --jitter {max_shift} asked for: write it with --jitter {max_shift}"
            )
        if num_classes != self.num_classes:
            raise KDistillError(
                f"teacher-logits file {self.path} has {self.num_classes} classes, the student "
                f"{num_classes}"
            )

    def positions(self, example_ids: Tensor, labels: Tensor | None = None) -> Tensor:
        """Where each example (by canonical index) is stored; refuses an absent example and,
        given ``labels``, an example whose label differs from the file's."""
        ids = example_ids.detach().cpu().long()
        lookup = torch.full((int(self.example_index.max()) + 1,), -1, dtype=torch.long)
        lookup[self.example_index] = torch.arange(len(self.example_index))
        inside = (ids >= 0) & (ids < len(lookup))
        found = torch.where(inside, lookup[ids.clamp(0, len(lookup) - 1)], -1)
        if bool((found < 0).any()):
            missing = int(ids[found < 0][0])
            raise KDistillError(
                f"teacher-logits file {self.path} has no logits for example {missing}: it was "
                "written for another training split"
            )
        if labels is not None and not torch.equal(self.labels[found], labels.detach().cpu()):
            first = int(torch.nonzero(self.labels[found] != labels.detach().cpu())[0])
            raise KDistillError(
                f"teacher-logits file {self.path} does not match this transfer set: example "
                f"{int(ids[first])} has label {int(self.labels[found[first]])} in the file, "
                f"{int(labels[first])} here (another dataset or example order)"
            )
        return found

    def logits_of(self, example_ids: Tensor, shifts: Tensor | None = None) -> Tensor:
        """Raw fp32 logits of examples under their shifts (None: unshifted), ``(B, C)`` for
        one teacher or ``(M, B, C)`` for an ensemble, on the device of ``example_ids``."""
        found = self.positions(example_ids)
        views = torch.full_like(found, self.center_view)
        if shifts is not None:
            views = view_index(shifts.detach().cpu().long(), self.max_shift)
        picked = self.logits[:, views, found].float()
        picked = picked if self.ensemble else picked[0]
        return picked.to(example_ids.device)

    @property
    def center_view(self) -> int:
        """The view of shift (0, 0)."""
        k = self.max_shift
        return k * (2 * k + 1) + k


def raw_logit_table(
    logits_file: TeacherLogitsFile,
    positions: Tensor,
    max_shift: int,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Raw fp32 logits of the examples stored at ``positions``, for every shift in
    [-max_shift, max_shift]², ``(M, V, n, C)``: a batch's teacher logits are then
    ``table[:, view_index(shifts, max_shift), index]`` (for a loss that takes raw logits)."""
    file_k = logits_file.max_shift
    views = [(dy + file_k) * (2 * file_k + 1) + (dx + file_k) for dy, dx in shift_grid(max_shift)]
    picked = logits_file.logits[:, torch.tensor(views)][:, :, positions.cpu()]
    return picked.to(device=device, dtype=torch.float32)


def log_soft_target_table(
    logits_file: TeacherLogitsFile,
    positions: Tensor,
    max_shift: int,
    temperature: float,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Log soft targets at ``temperature`` of the examples stored at ``positions``, for every
    shift in [-max_shift, max_shift]², ``(V, n, C)``: row ``view_index(shifts, max_shift)``.

    Computed once per run, so a step costs one gather, as with logits cached in memory.
    """
    from kdistill.losses import log_soft_targets

    table = raw_logit_table(logits_file, positions, max_shift, device)  # (M, V, n, C)
    m, v, n, c = table.shape
    flat = table.reshape(m, v * n, c)  # 2-D per member: one teacher is never read as M views
    log_probs = log_soft_targets(list(flat) if logits_file.ensemble else flat[0], temperature)
    return log_probs.reshape(v, n, c)


def read_teacher_logits(
    path: str | Path, expect: DatasetIdentity | None = None, max_shift: int | None = None
) -> TeacherLogitsFile:
    """Read and verify a teacher-logits file; every refusal is one ``KDistillError`` line.

    Refused: a missing, truncated or corrupt file (every tensor's and the metadata's sha256
    are checked), another format version, a view set that is not the full grid of its K, and,
    given ``expect``, another dataset, example order or class count; given ``max_shift``, a
    jitter larger than the file's. Only safetensors is parsed: no code is ever executed.
    """
    path = Path(path)
    if not path.is_file():
        raise KDistillError(f"teacher-logits file {path} does not exist")
    payload = path.read_bytes()
    tensors, metadata = _parse(path, payload)
    logits = tensors["logits"]
    ensemble = metadata.get("ensemble") == "true"
    logits_file = TeacherLogitsFile(
        path=path,
        sha256=hashlib.sha256(payload).hexdigest(),
        logits=logits if ensemble else logits.unsqueeze(0),
        example_index=tensors["example_index"],
        labels=tensors["labels"],
        metadata=metadata,
        ensemble=ensemble,
    )
    _check_consistent(logits_file)
    if expect is not None:
        _check_identity(logits_file, expect)
    if max_shift is not None:
        logits_file.check_run(max_shift, logits_file.num_classes)
    return logits_file


def _parse(path: Path, payload: bytes) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors payload, verified by their recorded sha256."""
    corrupt = f"teacher-logits file {path} is truncated or corrupt"
    try:
        header_size = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + header_size])
        metadata = dict(header.get("__metadata__") or {})
        tensors = safetensors_load(payload)
    except (SafetensorError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KDistillError(f"{corrupt}: {first_line}") from None
    if metadata.get("format") != FORMAT:
        raise KDistillError(f"{path} is not a kdistill teacher-logits file")
    if metadata.get("version") != VERSION:
        raise KDistillError(
            f"teacher-logits file {path} has format version {metadata.get('version')}, this "
            f"kdistill reads version {VERSION}: write it again"
        )
    try:
        recorded = json.loads(metadata["tensors_sha256"])
        ok = metadata.get("metadata_sha256") == _metadata_sha256(metadata)
    except (KeyError, ValueError):
        recorded, ok = {}, False
    if (
        not ok
        or set(recorded) != {"logits", "example_index", "labels"}
        or set(tensors) != set(recorded)
    ):
        raise KDistillError(f"{corrupt}: its metadata fails its checksum")
    for name, tensor in tensors.items():
        if tensor_sha256(tensor) != recorded[name]:
            raise KDistillError(f"{corrupt}: the bytes of '{name}' fail their checksum")
    return tensors, metadata


def _check_consistent(logits_file: TeacherLogitsFile) -> None:
    """Shapes, dtype and views agree with the metadata (the view set is the full K grid)."""
    meta, logits = logits_file.metadata, logits_file.logits
    path = logits_file.path
    try:
        views = [tuple(v) for v in json.loads(meta["views"])]
        k = int(meta["max_shift"])
        n, c = int(meta["num_examples"]), int(meta["num_classes"])
    except (KeyError, ValueError, TypeError):
        raise KDistillError(f"teacher-logits file {path} lacks its views or sizes") from None
    if views != shift_grid(k):
        raise KDistillError(
            f"teacher-logits file {path} holds views {views[:3]}..., not every shift in "
            f"[-{k}, {k}]²: write it again with kdistill teacher-logits"
        )
    if tuple(logits.shape[1:]) != (len(views), n, c) or logits.dtype != DTYPES.get(meta["dtype"]):
        raise KDistillError(
            f"teacher-logits file {path}: logits of shape {tuple(logits.shape)} and dtype "
            f"{logits.dtype} do not match its metadata"
        )
    if logits_file.example_index.shape != (n,) or logits_file.labels.shape != (n,):
        raise KDistillError(f"teacher-logits file {path}: example index or labels not of {n}")


def _check_identity(logits_file: TeacherLogitsFile, expect: DatasetIdentity) -> None:
    """The file was written for ``expect``'s dataset, examples in the same order, same classes."""
    meta, path = logits_file.metadata, logits_file.path
    if meta["dataset"] != expect.name:
        raise KDistillError(
            f"teacher-logits file {path} was written for dataset {meta['dataset']}, "
            f"not {expect.name}"
        )
    if logits_file.num_classes != expect.num_classes:
        raise KDistillError(
            f"teacher-logits file {path} has {logits_file.num_classes} classes, dataset "
            f"{expect.name} has {expect.num_classes}"
        )
    files = json.loads(meta.get("dataset_files", "{}"))
    if files and expect.files and files != expect.files:
        raise KDistillError(
            f"teacher-logits file {path} was written for other {expect.name} files "
            "(their sha256 differ)"
        )
    if meta["data_sha256"] != expect.data_sha256 or int(meta["num_examples"]) != (
        expect.num_examples
    ):
        raise KDistillError(
            f"teacher-logits file {path} was written for other {expect.name} training data or "
            "another example order (data sha256 differs): write it again for this data"
        )


# --------------------------------------------------------------------------- from runs
