"""Data: IDX files, the datasets kdistill knows, transfer-set operations, jitter and batching.

Whole datasets live in memory as tensors (images ``(N, 1, H, W)`` float32 in [0, 1], labels
``(N,)`` int64). Batches are slices of a shuffled index, not a per-sample ``DataLoader``: for
MNIST-sized data that is several times faster and makes a run's randomness one generator.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdistill.checkpoint import atomic_write
from kdistill.errors import KDistillError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class IdxFile:
    """One file of an MNIST-format dataset and the sha256 of its decompressed bytes."""

    name: str
    sha256: str


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Where an MNIST-format dataset's four files come from and how to verify them."""

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    how_to_get: str

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


IDX_DATASETS: dict[str, IdxDatasetSpec] = {
    "mnist": IdxDatasetSpec(
        name="mnist",
        train_images=IdxFile(
            "train-images-idx3-ubyte.gz",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        train_labels=IdxFile(
            "train-labels-idx1-ubyte.gz",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        test_images=IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        test_labels=IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        class_names=tuple(str(d) for d in range(10)),
        how_to_get="pass --download (or download=True), or point --data-dir / KDISTILL_DATA "
        "at a folder holding mnist/",
    ),
    "fashion-mnist": IdxDatasetSpec(
        name="fashion-mnist",
        train_images=IdxFile(
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        train_labels=IdxFile(
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        test_images=IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        test_labels=IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        how_to_get="pass --download (or download=True); or `apt-get install dataset-fashion-mnist` "
        "and pass the folder that `dpkg -L dataset-fashion-mnist` shows as --data-dir; or point "
        "--data-dir / KDISTILL_DATA at a folder holding fashion-mnist/",
    ),
}

DATASET_NAMES = ("digits", *IDX_DATASETS)


@dataclass
class Split:
    """Images and labels of one split, in memory.

    ``example_index`` says which examples of the split it was taken from these are, by position
    (``None``: the split is itself in canonical order, example ``i`` at position ``i``). Subsets
    carry it, so a transfer set made by dropping classes or taking a fraction still knows each
    example's index in the dataset's training split (teacher-logits files are looked up by it).
    """

    images: Tensor  # (N, 1, H, W) float32 in [0, 1]
    labels: Tensor  # (N,) int64
    example_index: Tensor | None = None  # (N,) int64: positions in the canonical split

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise KDistillError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.example_index is not None and len(self.example_index) != len(self.labels):
            raise KDistillError(
                f"{len(self.example_index)} example indices but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def example_ids(self) -> Tensor:
        """Each example's index in the canonical split it comes from, ``(N,)`` int64."""
        if self.example_index is not None:
            return self.example_index
        return torch.arange(len(self), device=self.labels.device)

    def subset(self, index: Tensor) -> Split:
        """The examples at ``index`` (a LongTensor or bool mask), as a new split."""
        ids = self.example_ids.to(self.labels.device)
        return Split(self.images[index], self.labels[index], ids[index])


@dataclass
class Dataset:
    """A named dataset: its train and test splits and class names."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    @cached_property
    def pixel_statistics(self) -> tuple[float, float]:
        """The mean and standard deviation of every pixel of the full training split.

        The numbers ``--inputs standardized`` scales inputs by, computed once per dataset
        object: from the whole training split, whatever transfer set a run takes from it.
        """
        return pixel_statistics(self.train.images)


def pixel_statistics(images: Tensor, chunk: int = 1024) -> tuple[float, float]:
    """The mean and (population) standard deviation of all values of ``images``.

    Sums of ``chunk`` examples in float32 (torch's pairwise sums), added up in float64: within
    1e-8 of a float64 computation on MNIST, in 0.03 s instead of 0.5 s.
    """
    if images.numel() == 0:
        raise KDistillError("cannot compute the pixel statistics of an empty split")
    total = squares = 0.0
    for part in images.split(chunk):
        total += float(part.sum())
        squares += float((part * part).sum())
    mean = total / images.numel()
    variance = max(squares / images.numel() - mean * mean, 0.0)
    return mean, variance**0.5


# --------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a numpy array.

    Args:
        path: the file.
        expected_sha256: if given, the sha256 of the *decompressed* bytes must equal it, so a
            re-compressed copy of the same data passes and a corrupt one does not.

    Raises:
        ValueError: the file is missing, truncated, not IDX, or fails the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise KDistillError(f"missing data file {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KDistillError(f"corrupt data file {path}: {exc}") from None
    data = _decompressed(raw, f"corrupt data file {path}")
    if expected_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            known = _known_file(digest)
            if known is not None:
                raise KDistillError(
                    f"{path} is {known}, not the file expected here: point --data-dir (or "
                    "KDISTILL_DATA) at the folder holding the dataset you asked for"
                )
            raise KDistillError(
                f"corrupt data file {path}: sha256 of its decompressed bytes is {digest[:16]}..., "
                f"expected {expected_sha256[:16]}...; delete it and get it again"
            )
    return parse_idx(data, source=str(path))


def _decompressed(raw: bytes, corrupt: str) -> bytes:
    """The bytes of an IDX file, gunzipped if they are gzip; ``corrupt`` starts the error."""
    try:
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise KDistillError(f"{corrupt}: {exc}") from None


def _known_file(digest: str) -> str | None:
    """Which known dataset file has this sha256, e.g. "the mnist train_images file"."""
    for spec in IDX_DATASETS.values():
        for role in ("train_images", "train_labels", "test_images", "test_labels"):
            if getattr(spec, role).sha256 == digest:
                return f"the {spec.name} {role.replace('_', ' ')} file (valid)"
    return None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise KDistillError(f"corrupt data file {source}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise KDistillError(f"corrupt data file {source}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise KDistillError(
            f"corrupt data file {source}: {len(data) - header} data bytes, "
            f"expected {expected} for shape {shape}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data folder: ``data_dir``, else ``$KDISTILL_DATA``, else ``~/.cache/kdistill``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("KDISTILL_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kdistill"


def _dataset_folder(spec: IdxDatasetSpec, root: Path) -> Path:
    """``root/<name>`` if it exists, else ``root`` itself when the files lie there directly."""
    nested = root / spec.name
    if nested.is_dir():
        return nested
    if all((root / f.name).is_file() for f in spec.files):
        return root
    return nested


def download_idx_dataset(
    name: str, root: str | Path, mirrors: Sequence[str] | None = None, timeout: float = 60.0
) -> Path:
    """Fetch an MNIST-format dataset's files into ``root/<name>``, verified and atomically.

    Each file is tried from each mirror in turn; a file that fails its checksum is discarded.
    Files already present and valid are kept.

    Returns:
        The folder holding the four files.
    """
    spec = _idx_spec(name)
    folder = Path(root) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    for file in spec.files:
        target = folder / file.name
        if target.is_file():
            try:
                read_idx(target, file.sha256)
                continue
            except KDistillError:
                pass  # corrupt: fetch it again
        errors = []
        for mirror in mirrors or spec.mirrors:
            url = mirror.rstrip("/") + "/" + file.name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
                read_idx_bytes_checked(payload, file.sha256, url)
            except (urllib.error.URLError, OSError, KDistillError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            atomic_write(target, payload)
            break
        else:
            raise KDistillError(f"could not download {file.name} for {name}: " + "; ".join(errors))
    return folder


def read_idx_bytes_checked(payload: bytes, sha256: str, source: str) -> np.ndarray:
    """Decompress (if gzip), verify and parse IDX bytes that came from ``source``."""
    data = _decompressed(payload, f"corrupt download from {source}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise KDistillError(f"corrupt download from {source}: checksum mismatch")
    return parse_idx(data, source)


# --------------------------------------------------------------------------- datasets


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name into memory.

    Args:
        name: ``digits`` (scikit-learn's bundled 8x8 digits: no download), ``mnist`` or
            ``fashion-mnist`` (60k/10k, 28x28).
        data_dir: folder holding ``mnist/`` and ``fashion-mnist/`` (or the four files
            directly); defaults to ``$KDISTILL_DATA``, then ``~/.cache/kdistill``.
        download: fetch missing MNIST-format files from the public mirrors.
    """
    if name == "digits":
        return _load_digits()
    spec = _idx_spec(name)
    root = resolve_data_dir(data_dir)
    if download:
        folder = download_idx_dataset(name, root)
    else:
        folder = _dataset_folder(spec, root)
        for file in spec.files:
            if not (folder / file.name).is_file():
                raise KDistillError(
                    f"missing data file {folder / file.name} for {name}: {spec.how_to_get}"
                )
    arrays = [read_idx(folder / f.name, f.sha256) for f in spec.files]
    train_images, train_labels, test_images, test_labels = arrays
    return Dataset(
        name=name,
        train=_to_split(train_images, train_labels, 255.0),
        test=_to_split(test_images, test_labels, 255.0),
        class_names=spec.class_names,
    )


def _idx_spec(name: str) -> IdxDatasetSpec:
    if name not in IDX_DATASETS:
        raise KDistillError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return IDX_DATASETS[name]


def _to_split(images: np.ndarray, labels: np.ndarray, scale: float) -> Split:
    # One float32 pass (the same values as astype(float32) / scale, which took about a second
    # of a run's fixed cost on MNIST's 60,000 images: issue 15), written into torch's memory:
    # numpy asks the kernel for huge pages for an array this large, and after `import torch`
    # their first touch took 0.3-0.6 s here against 0.1 s for torch's ordinary pages.
    x = torch.empty(images.shape, dtype=torch.float32)
    np.divide(images, np.float32(scale), out=x.numpy(), dtype=np.float32)
    return Split(x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, split 1,297 train / 500 test by a fixed permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1297], order[1297:]
    return Dataset(
        name="digits",
        train=_to_split(images[train], bunch.target[train], 16.0),
        test=_to_split(images[test], bunch.target[test], 16.0),
        class_names=tuple(str(d) for d in range(10)),
    )


# --------------------------------------------------------------------------- transfer sets


def drop_classes(split: Split, classes: Iterable[int]) -> Split:
    """The split without any example of ``classes`` (paper: a transfer set with no 3s)."""
    return split.subset(~torch.isin(split.labels, torch.as_tensor(list(classes))))


def keep_classes(split: Split, classes: Iterable[int]) -> Split:
    """Only the examples of ``classes`` (paper: a transfer set of only 7s and 8s)."""
    return split.subset(torch.isin(split.labels, torch.as_tensor(list(classes))))


def stratified_fraction(split: Split, fraction: float, seed: int) -> Split:
    """A random ``fraction`` of each class, kept in the original order (paper: 3% of data)."""
    if not 0 < fraction <= 1:
        raise KDistillError(f"fraction must be in (0, 1], got {fraction!r}")
    chosen, _ = _stratified_partition(split.labels, fraction, seed)
    return split.subset(chosen)


def train_val_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a stratified held-out part (for early stopping or choosing a bias shift)."""
    if not 0 < val_fraction < 1:
        raise KDistillError(f"validation fraction must be in (0, 1), got {val_fraction!r}")
    val, train = _stratified_partition(split.labels, val_fraction, seed)
    return split.subset(train), split.subset(val)


def _stratified_partition(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        take = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[torch.cat(chosen)] = True
    return torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()


# --------------------------------------------------------------------------- batches


def random_shifts(
    batch: int, max_shift: int, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """One random integer shift ``(dy, dx)`` in [-k, k]² per example, ``(batch, 2)`` int64.

    Column 0 is ``dy`` (rows), column 1 is ``dx`` (columns); see :func:`shift_images` for the
    direction. The draw is the one :func:`jitter` has always made (one ``randint`` of shape
    ``(2, batch)``: all dy, then all dx), so runs keep their exact results.
    """
    k = max_shift
    offsets = torch.randint(0, 2 * k + 1, (2, batch), generator=generator, device=device)
    return (offsets - k).t()


def shift_images(images: Tensor, shifts: Tensor, max_shift: int) -> Tensor:
    """Translate each image by its own integer shift; pixels shifted in from outside are 0.

    Output pixel ``(i, j)`` of example ``b`` is input pixel ``(i + dy, j + dx)`` where
    ``(dy, dx) = shifts[b]``: a positive ``dy`` moves the picture up, a positive ``dx`` left.
    The whole batch is moved in one gather, with no per-example Python work.

    Args:
        images: ``(B, C, H, W)``.
        shifts: ``(B, 2)`` integers ``(dy, dx)``, each in [-max_shift, max_shift].
        max_shift: the padding, k >= 0 (a bound on the shifts; no host sync to find it).
    """
    b, c, h, w = images.shape
    k = max_shift
    padded = torch.nn.functional.pad(images, (k, k, k, k))
    offsets = shifts.to(images.device) + k  # (B, 2) in [0, 2k]
    rows = (torch.arange(h, device=images.device)[None, :] + offsets[:, 0:1])[:, :, None]
    cols = (torch.arange(w, device=images.device)[None, :] + offsets[:, 1:2])[:, None, :]
    flat = padded.reshape(b, c, -1)
    index = (rows * (w + 2 * k) + cols).reshape(b, 1, h * w).expand(b, c, h * w)
    return flat.gather(2, index).reshape(b, c, h, w)


def jitter(images: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image of a batch by its own random integer shift in [-k, k] pixels.

    The same as ``shift_images(images, random_shifts(len(images), k, generator), k)``; use that
    pair where the shifts themselves are needed (to look up a teacher's logits of each view).

    Args:
        images: ``(B, C, H, W)``.
        max_shift: k >= 0; 0 returns ``images`` unchanged.
        generator: the source of the shifts, on the images' device.
    """
    if max_shift <= 0:
        return images
    shifts = random_shifts(len(images), max_shift, generator, images.device)
    return shift_images(images, shifts, max_shift)


def shift_grid(max_shift: int) -> list[tuple[int, int]]:
    """Every shift ``(dy, dx)`` in [-k, k]², dy-major: shift ``(dy, dx)`` is at
    ``(dy + k) * (2k + 1) + (dx + k)``."""
    span = range(-max_shift, max_shift + 1)
    return [(dy, dx) for dy in span for dx in span]


def view_index(shifts: Tensor, max_shift: int) -> Tensor:
    """The position of each shift ``(dy, dx)`` in :func:`shift_grid` of ``max_shift``, ``(B,)``."""
    k = max_shift
    return (shifts[:, 0] + k) * (2 * k + 1) + (shifts[:, 1] + k)


def batch_indices(
    num_examples: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    shuffle: bool = True,
) -> Iterator[Tensor]:
    """Yield index tensors of consecutive batches of a (shuffled) epoch.

    (Under torchrun the training loop asks for batches of the global size and shards each.)
    """
    if batch_size < 1:
        raise KDistillError(f"batch size must be >= 1, got {batch_size}")
    if shuffle:
        device = generator.device if generator is not None else None
        order = torch.randperm(num_examples, generator=generator, device=device)
    else:
        order = torch.arange(num_examples)
    for start in range(0, num_examples, batch_size):
        yield order[start : start + batch_size]


# --------------------------------------------------------------------------- torch datasets


class DatasetBatches:
    """Batches of a ``torch.utils.data.Dataset`` for data that does not fit in memory.

    Each item must be ``(input, label)``. kdistill draws the epoch's shuffled order itself (from
    the run's generator, so a resumed run sees the same batches) and loads the examples through a
    ``DataLoader`` with that order, so every batch comes with the indices of its examples: that
    is what lets teacher logits be cached by example index.

    Args:
        dataset: a map-style dataset (``__len__`` and ``__getitem__``).
        batch_size: examples per batch (``fit`` sets it from its config).
        num_workers, pin_memory, collate_fn: passed to ``DataLoader``.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int = 128,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        collate_fn=None,
    ) -> None:
        try:
            self.size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise KDistillError(
                "a Dataset given to kdistill needs __len__ and __getitem__ (map-style); "
                "wrap an iterable dataset in a DataLoader instead"
            ) from None
        if self.size == 0:
            raise KDistillError("the dataset is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.loader_options = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "collate_fn": collate_fn,
        }

    def __len__(self) -> int:
        return self.size

    def with_batch_size(self, batch_size: int) -> DatasetBatches:
        """The same data in batches of ``batch_size``."""
        copy = DatasetBatches.__new__(DatasetBatches)
        copy.__dict__.update(self.__dict__, batch_size=batch_size)
        return copy

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return -(-self.size // self.batch_size)

    indexed = True  # batches come with their example indices

    def _load(self, batches: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        # Without workers the loader's base seed is unused: draw it from a private generator so
        # the run's global RNG stream (dropout, ...) is the same as on the in-memory path. With
        # workers it comes from the global RNG, which checkpoints restore.
        private = torch.Generator() if self.loader_options["num_workers"] == 0 else None
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[b.tolist() for b in batches],
            generator=private,
            **self.loader_options,
        )
        for index, (x, y) in zip(batches, loader, strict=True):
            yield index, x, torch.as_tensor(y)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(indices, inputs, labels)`` of each batch of one shuffled epoch (CPU tensors)."""
        order = batch_indices(self.size, self.batch_size, generator)
        return self._load([index.cpu() for index in order])

    def in_order(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Every example once, in index order (to cache teacher logits or to evaluate)."""
        return self._load(list(torch.arange(self.size).split(batch_size)))

    def first_input(self) -> Tensor:
        """The first example's input, with a batch dimension of 1."""
        return torch.as_tensor(self.dataset[0][0]).unsqueeze(0)

    def is_deterministic(self, probes: int = 2) -> bool:
        """Whether a few examples read twice come back equal (no random augmentation).

        A cheap guard: a Dataset that augments randomly must not have its teacher logits
        cached, because the student would see other inputs than those the teacher scored.
        """
        for i in range(min(probes, self.size)):
            a, b = self.dataset[i][0], self.dataset[i][0]
            if not torch.equal(torch.as_tensor(a), torch.as_tensor(b)):
                return False
        return True


class LoaderBatches:
    """A user's own ``DataLoader``, used as it is: its order, batch size and transforms.

    Its batches carry no example indices, so a teacher runs online on each batch.
    """

    indexed = False

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        try:
            self.steps = len(loader)
        except TypeError:
            raise KDistillError("the DataLoader needs a length (a dataset with __len__)") from None
        if self.steps == 0:
            raise KDistillError("the DataLoader yields no batches")
        self.loader = loader

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[None, Tensor, Tensor]]:
        """``(None, inputs, labels)`` of each batch the loader yields."""
        for batch in self.loader:
            x, y = batch[0], batch[1]
            yield None, x, torch.as_tensor(y)

    def in_order(self, batch_size: int) -> Iterator[tuple[None, Tensor, Tensor]]:
        """The loader's batches (its own order; for evaluation only)."""
        return self.epoch(None)  # type: ignore[arg-type]

    def first_input(self) -> Tensor:
        """One input from the loader's dataset, with a batch dimension of 1."""
        try:
            return torch.as_tensor(self.loader.dataset[0][0]).unsqueeze(0)
        except (TypeError, NotImplementedError, IndexError, KeyError):  # an iterable dataset
            return torch.as_tensor(next(iter(self.loader))[0][:1])


def as_batches(
    data: torch.utils.data.Dataset | torch.utils.data.DataLoader | DatasetBatches,
    batch_size: int,
) -> DatasetBatches | LoaderBatches:
    """A batch source for a torch ``Dataset`` (kdistill batches it) or ``DataLoader`` (as is)."""
    if isinstance(data, DatasetBatches):
        return data.with_batch_size(batch_size)
    if isinstance(data, LoaderBatches):
        return data
    if isinstance(data, torch.utils.data.DataLoader):
        return LoaderBatches(data)
    if isinstance(data, torch.utils.data.Dataset):
        return DatasetBatches(data, batch_size)
    raise KDistillError(
        f"training data must be a kdistill Split, a torch Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )
