"""Atomic files and per-epoch checkpoints that load without executing pickled code.

A checkpoint is written under a new name, then ``checkpoint.json`` (its name, epoch and
sha256) is replaced atomically, then older checkpoints are deleted. A run killed at any moment
therefore leaves a pointer to a complete checkpoint, and a corrupt file is caught by its
checksum before ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from kdistill.errors import KDistillError

POINTER = "checkpoint.json"


def atomic_write(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temp file + rename: the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FolderLock:
    """An exclusive lock on a run folder, held while one process writes the run into it.

    Two processes writing one run (say a resume started twice) would interleave checkpoints
    and histories; the second is refused instead. The lock is ``flock`` on the folder itself,
    so nothing is written for it, and the kernel releases it when its process dies (a killed
    run never leaves a stale lock). Where ``fcntl`` is missing (Windows) it locks nothing.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KDistillError(
                f"another process is writing a run into {self.folder}: wait for it to end "
                "(or stop it), then resume; or choose another --out"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def current_umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_folder(path: str | Path) -> bool:
    """Create the output folder ``path`` (and its parents); return whether it was new.

    Raises:
        KDistillError: ``path`` is a file, or cannot be created (permissions, a read-only or
            virtual file system): one line saying so, never an OSError traceback.
    """
    path = Path(path)
    check_folder_path(path)
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KDistillError(
            f"cannot create the folder {path}: {exc.strerror or exc}; choose another --out"
        ) from None
    return not existed


def check_folder_path(path: str | Path) -> None:
    """Refuse an output folder path that names an existing file (or lies under one)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise KDistillError(
                    f"{part} is a file, not a folder: choose another --out for {path}"
                )
            return


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` for text (UTF-8)."""
    atomic_write(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """:func:`atomic_write` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save a flat dict of tensors as safetensors, atomically."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, safetensors_save(contiguous))


def save_checkpoint(folder: str | Path, state: dict[str, Any], epoch: int) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) as the checkpoint of ``epoch``."""
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    name = f"checkpoint-epoch{epoch:04d}.pt"
    atomic_write(folder / name, payload)
    atomic_write_json(
        folder / POINTER,
        {"file": name, "epoch": epoch, "sha256": hashlib.sha256(payload).hexdigest()},
    )
    for old in folder.glob("checkpoint-epoch*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    for partial in folder.glob(".checkpoint-epoch*.tmp"):  # left by a kill during a write
        partial.unlink(missing_ok=True)
    return folder / name


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a checkpoint pointer."""
    return (Path(folder) / POINTER).is_file()


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load the latest checkpoint in ``folder``, verified by its sha256.

    Raises:
        ValueError: no checkpoint, or a corrupt or half-written one (never loaded silently).
    """
    folder = Path(folder)
    pointer_path = folder / POINTER
    if not pointer_path.is_file():
        raise KDistillError(f"no checkpoint to resume from in {folder}: run without --resume")
    try:
        pointer = json.loads(pointer_path.read_text())
        path = folder / pointer["file"]
        expected = pointer["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KDistillError(f"corrupt checkpoint pointer {pointer_path}: {exc}") from None
    if not path.is_file():
        raise KDistillError(f"checkpoint {path} named by {pointer_path} is missing")
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != expected:
        raise KDistillError(
            f"corrupt checkpoint {path}: its sha256 does not match {POINTER}; "
            "delete the run folder and start again"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged archive
        raise KDistillError(f"corrupt checkpoint {path}: {exc}") from None
