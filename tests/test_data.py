"""IDX reading (real and corrupted files), downloads from a local server, transfer sets, jitter."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
from pathlib import Path

import pytest
import torch

from kdistill.data import (
    IDX_DATASETS,
    Split,
    batch_indices,
    download_idx_dataset,
    drop_classes,
    jitter,
    keep_classes,
    load_dataset,
    read_idx,
    stratified_fraction,
    train_val_split,
)
from tests.helpers import make_split

MNIST = IDX_DATASETS["mnist"]


def test_reads_the_real_mnist_files(shared_data):
    folder = shared_data / "mnist"
    labels = read_idx(folder / MNIST.train_labels.name, MNIST.train_labels.sha256)
    images = read_idx(folder / MNIST.test_images.name, MNIST.test_images.sha256)
    assert labels.shape == (60000,) and images.shape == (10000, 28, 28)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = torch.bincount(torch.from_numpy(labels.astype("int64"))).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_load_dataset_mnist(shared_data):
    dataset = load_dataset("mnist", shared_data)
    assert dataset.train.images.shape == (60000, 1, 28, 28)
    assert dataset.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert dataset.train.images.dtype == torch.float32
    assert float(dataset.train.images.mean()) == pytest.approx(0.1307, abs=1e-4)
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 28, 28)
    # pixel / 255 in float32, every value exactly as the plain numpy expression gives it
    pixels = read_idx(shared_data / "mnist" / MNIST.train_images.name)
    expected = torch.from_numpy(pixels.astype("float32") / 255.0)
    assert torch.equal(dataset.train.images[:, 0], expected)
    assert dataset.train.images.is_contiguous()


def _copy_mnist(shared_data: Path, target: Path, level: int = 1) -> Path:
    """A re-compressed copy of the real files: other .gz bytes, same decompressed data."""
    target.mkdir(parents=True, exist_ok=True)
    for file in MNIST.files:
        data = gzip.decompress((shared_data / "mnist" / file.name).read_bytes())
        (target / file.name).write_bytes(gzip.compress(data, compresslevel=level))
    return target


def test_recompressed_copy_passes_and_files_may_lie_directly_in_the_folder(shared_data, tmp_path):
    folder = _copy_mnist(shared_data, tmp_path / "flat")
    original = (shared_data / "mnist" / MNIST.test_labels.name).read_bytes()
    assert (folder / MNIST.test_labels.name).read_bytes() != original
    assert len(load_dataset("mnist", folder).test) == 10000


def test_corrupt_file_is_reported_with_its_name(shared_data, tmp_path):
    folder = _copy_mnist(shared_data, tmp_path / "mnist")
    bad = folder / MNIST.test_labels.name
    data = bytearray(gzip.decompress(bad.read_bytes()))
    data[100] ^= 0xFF  # one label changed: still valid IDX, wrong data
    bad.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ValueError, match=r"corrupt data file .*t10k-labels.*sha256"):
        load_dataset("mnist", tmp_path)


def test_truncated_file_is_reported(shared_data, tmp_path):
    folder = _copy_mnist(shared_data, tmp_path / "mnist")
    bad = folder / MNIST.train_labels.name
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"corrupt data file .*train-labels"):
        load_dataset("mnist", tmp_path)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"missing data file .*train-images.*--download"):
        load_dataset("mnist", tmp_path)


def test_not_idx_and_unknown_dataset(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


@pytest.fixture
def local_mirrors(shared_data, tmp_path):
    """Two HTTP mirrors on 127.0.0.1: one serving corrupt files, one serving good ones."""
    good = _copy_mnist(shared_data, tmp_path / "good")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for file in MNIST.files:
        (corrupt / file.name).write_bytes(b"\x1f\x8b not really gzip")
    servers = []
    for root in (corrupt, good):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}/" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_from_local_server_verifies_and_falls_back(local_mirrors, tmp_path):
    root = tmp_path / "downloaded"
    folder = download_idx_dataset("mnist", root, mirrors=local_mirrors, timeout=10)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in MNIST.files)
    assert len(load_dataset("mnist", root).train) == 60000


def test_download_fails_clearly_when_every_mirror_is_bad(local_mirrors, tmp_path):
    with pytest.raises(ValueError, match=r"could not download .* for mnist"):
        download_idx_dataset("mnist", tmp_path / "d", mirrors=local_mirrors[:1], timeout=10)
    assert not list((tmp_path / "d" / "mnist").glob("*.gz"))  # nothing half-written is left


def test_digits_needs_no_download():
    dataset = load_dataset("digits")
    assert len(dataset.train) == 1297 and len(dataset.test) == 500
    assert dataset.train.images.shape[1:] == (1, 8, 8)
    assert 0.0 <= float(dataset.train.images.min()) and float(dataset.train.images.max()) <= 1.0


def test_drop_and_keep_classes():
    split = make_split(n=400, classes=4)
    dropped = drop_classes(split, [3])
    assert 3 not in dropped.labels.tolist() and len(dropped) == 300
    kept = keep_classes(split, [1, 2])
    assert set(kept.labels.tolist()) == {1, 2} and len(kept) == 200
    torch.testing.assert_close(kept.images, split.images[(split.labels == 1) | (split.labels == 2)])


def test_stratified_fraction_is_per_class_and_seeded():
    split = make_split(n=400, classes=4)
    part = stratified_fraction(split, 0.1, seed=3)
    assert torch.bincount(part.labels).tolist() == [10, 10, 10, 10]
    assert torch.equal(part.images, stratified_fraction(split, 0.1, seed=3).images)
    assert not torch.equal(part.images, stratified_fraction(split, 0.1, seed=4).images)
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction(split, 0.0, seed=0)


def test_train_val_split_is_a_partition():
    split = Split(torch.arange(100.0).view(100, 1, 1, 1), torch.arange(100) % 5)
    train, val = train_val_split(split, 0.2, seed=0)
    assert len(train) == 80 and len(val) == 20
    seen = sorted(train.images.flatten().tolist() + val.images.flatten().tolist())
    assert seen == list(range(100))
    assert torch.bincount(val.labels).tolist() == [4] * 5


def test_jitter_shifts_each_image_within_k_pixels():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 9, 9) + 0.1  # no zeros, so a shift is recognisable
    moved = jitter(images, 2, generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(moved[i, 0], padded[i, 0, dy : dy + 9, dx : dx + 9])
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 10  # shifts differ between examples
    assert jitter(images, 0, generator) is images


def test_batch_indices_cover_an_epoch():
    generator = torch.Generator().manual_seed(0)
    batches = list(batch_indices(103, 10, generator))
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    again = list(batch_indices(103, 10, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded
    in_order = list(batch_indices(25, 10, shuffle=False))
    assert [b.tolist() for b in in_order] == [
        list(range(0, 10)),
        list(range(10, 20)),
        [*range(20, 25)],
    ]
    with pytest.raises(ValueError, match="batch size"):
        list(batch_indices(10, 0))
