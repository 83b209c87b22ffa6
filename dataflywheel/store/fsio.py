"""Local-filesystem primitives shared by the backends: atomic writes and verified copies.

Runs in: anywhere. A file only ever appears at its final path complete and fsynced: bytes go
to a temp file in the destination directory (same filesystem, so ``os.replace`` is atomic)
and the temp file is removed on any failure, so a crash never leaves a partial object.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from dataflywheel.store.api import CorruptObjectError, StoreError
from dataflywheel.store.keys import CHUNK_SIZE, digest_of_key

TEMP_PREFIX = ".flywheel-tmp-"
# mkstemp creates 0600 files; objects and downloaded trees must stay readable by the other
# processes of a deployment (Ray workers, the API) that may run as another user.
FILE_MODE = 0o644


@contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it is fsynced and renamed onto ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TEMP_PREFIX)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def fsync_dir(path: Path) -> None:
    """Persist a rename; best effort because some filesystems cannot fsync a directory."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_verified(chunks: Iterable[bytes], dest: Path, key: str, where: str) -> Path:
    """Stream ``chunks`` into ``dest`` atomically; keep it only if it hashes to ``key``.

    ``where`` (the store's URI) goes into the :class:`CorruptObjectError` message.
    """
    expected = digest_of_key(key)
    h = hashlib.sha256()
    with atomic_writer(dest) as out:
        for chunk in chunks:
            h.update(chunk)
            out.write(chunk)
        # Raising inside the writer removes the temp file: a corrupt object never lands.
        check_digest(h.hexdigest(), expected, key, where)
    return dest


def check_digest(actual: str, expected: str, key: str, where: str) -> None:
    """Raise :class:`CorruptObjectError` unless the digests match."""
    if actual != expected:
        raise CorruptObjectError(
            f"object {key} in {where} is corrupt: its bytes hash to sha256 {actual}. "
            "Delete the object and re-run the step that produced it to store it again."
        )


def read_chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    """Chunks of an open binary file until EOF."""
    while chunk := f.read(size):
        yield chunk


def copy_hashing(src: BinaryIO, out: BinaryIO) -> str:
    """Copy ``src`` to ``out`` in chunks; return the sha256 of exactly what was copied."""
    h = hashlib.sha256()
    for chunk in read_chunks(src, CHUNK_SIZE):
        h.update(chunk)
        out.write(chunk)
    return h.hexdigest()


# --- the caller's source files ------------------------------------------------------------
# Errors reading what the caller asked to store are the caller's to fix, not the store's:
# they get their own message instead of the "store is not writable" one.


def hash_source(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file the caller wants stored."""
    with open_source(path) as f:
        h = hashlib.sha256()
        size = 0
        try:
            for chunk in read_chunks(f, CHUNK_SIZE):
                h.update(chunk)
                size += len(chunk)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
    return h.hexdigest(), size


def open_source(path: Path) -> BinaryIO:
    """Open a file the caller wants stored, with a clear error if it cannot be read."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory: store it with put_tree (`flywheel store put`)")
    try:
        return path.open("rb")
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def source_changed(path: Path) -> StoreError:
    """The file's bytes differed between hashing and copying: nothing was stored."""
    return StoreError(
        f"{path} changed while it was being stored; nothing was stored. "
        "Store it again once nothing is writing to it."
    )


def _unreadable(path: Path, exc: OSError) -> StoreError:
    return StoreError(f"cannot read {path}: {exc.strerror or exc}")
