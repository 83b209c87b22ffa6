"""The object store on a local directory (the default: ``<FLYWHEEL_DATA_DIR>/objects``).

Runs in: anywhere that can see the directory (CLI, Prefect tasks, Ray workers on a shared
filesystem). Objects live at ``<root>/sha256/ab/<digest>``; every write goes through
:func:`~dataflywheel.store.fsio.atomic_writer`, so a reader never sees a partial object.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dataflywheel.store import tree
from dataflywheel.store.api import ObjectInfo, ObjectNotFoundError, ObjectRef, StoreError
from dataflywheel.store.fsio import (
    atomic_writer,
    check_digest,
    copy_hashing,
    hash_source,
    open_source,
    read_chunks,
    source_changed,
    write_verified,
)
from dataflywheel.store.keys import (
    CHUNK_SIZE,
    PROBE_BYTES,
    digest_of_bytes,
    digest_of_key,
    is_key,
    key_for_digest,
    normalize_key,
)


class LocalStore:
    """Content-addressed objects under a local directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    # --- writes ---------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> ObjectRef:
        digest = digest_of_bytes(data)
        ref = ObjectRef(key_for_digest(digest), digest, len(data))
        path = self._path(ref.key)
        with self._writing():
            if not _has(path, ref.size):
                with atomic_writer(path) as out:
                    out.write(data)
        return ref

    def put_file(self, path: Path) -> ObjectRef:
        # Two passes: hash first so an object already stored costs one read and no write,
        # then copy while hashing again so the bytes kept are exactly the bytes named.
        digest, size = hash_source(Path(path))
        ref = ObjectRef(key_for_digest(digest), digest, size)
        dest = self._path(ref.key)
        with self._writing():
            if _has(dest, size):
                return ref
            with open_source(Path(path)) as src, atomic_writer(dest) as out:
                if copy_hashing(src, out) != digest:
                    raise source_changed(Path(path))
        return ref

    def check(self) -> None:
        with self._writing():
            self.root.mkdir(parents=True, exist_ok=True)
            probe = key_for_digest(digest_of_bytes(PROBE_BYTES))
            # Written unconditionally: an existing probe must not hide a read-only store.
            with atomic_writer(self._path(probe)) as out:
                out.write(PROBE_BYTES)
        self.get_bytes(probe)

    # --- reads ----------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        key = normalize_key(key)
        with self._reading(key):
            data = self._path(key).read_bytes()
        check_digest(digest_of_bytes(data), digest_of_key(key), key, self.uri)
        return data

    def get_file(self, key: str, dest: Path) -> Path:
        key = normalize_key(key)
        dest = Path(dest)
        with self._reading(key):
            src = self._path(key).open("rb")
        with src:
            try:
                return write_verified(read_chunks(src, CHUNK_SIZE), dest, key, self.uri)
            except OSError as exc:
                raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(normalize_key(key)).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / "sha256"
        for shard in _sorted_names(base):
            shard_prefix = f"sha256/{shard}/"
            if not (shard_prefix.startswith(prefix) or prefix.startswith(shard_prefix)):
                continue
            for name in _sorted_names(base / shard):
                key = shard_prefix + name
                if not (is_key(key) and key.startswith(prefix)):
                    continue  # temp files of writes in flight, stray files
                try:
                    size = (base / shard / name).stat().st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, size)

    # --- trees ----------------------------------------------------------------------------

    def put_tree(self, root: Path) -> ObjectRef:
        return tree.put_tree(self, Path(root))

    def get_tree(self, manifest_key: str, dest: Path) -> Path:
        return tree.get_tree(self, manifest_key, Path(dest))

    # --- helpers --------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            where = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
            raise StoreError(
                f"cannot write to the local object store {self.uri} ({where}). Set "
                "FLYWHEEL_STORE_URI to a writable directory (or s3://bucket/prefix), or "
                "FLYWHEEL_DATA_DIR to a writable directory (the default store is "
                "<FLYWHEEL_DATA_DIR>/objects)."
            ) from exc

    @contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key} in {self.uri}") from exc
        except OSError as exc:
            raise StoreError(
                f"cannot read object {key} from {self.uri}: {exc.strerror or exc}"
            ) from exc


def _has(path: Path, size: int) -> bool:
    """Whether a complete object is already there (size check: puts stay O(1) reads)."""
    try:
        return path.stat().st_size == size
    except (FileNotFoundError, NotADirectoryError):
        return False


def _sorted_names(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
