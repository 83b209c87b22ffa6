"""The object store's vocabulary: references, errors and the ``ObjectStore`` protocol.

Runs in: anywhere (pure). Every backend (``local.py``, ``s3.py``) implements
:class:`ObjectStore`; callers depend on the protocol, never on a backend class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectRef:
    """A stored object: its key (``sha256/ab/<digest>``), hex digest and size in bytes."""

    key: str
    digest: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of :meth:`ObjectStore.list`."""

    key: str
    size: int


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message names the setting or input to fix."""


class CorruptObjectError(StoreError):
    """A stored object's bytes do not hash to the digest in its key."""


class ObjectNotFoundError(StoreError):
    """No object is stored under the key."""


class InvalidKeyError(StoreError):
    """A key is not ``sha256/<2 hex>/<64 hex>`` (or a bare 64-hex digest)."""


@runtime_checkable
class ObjectStore(Protocol):
    """A content-addressed store: keys are derived from content, so puts are idempotent
    and every read is verified against the digest in its key."""

    uri: str

    def put_bytes(self, data: bytes) -> ObjectRef: ...

    def put_file(self, path: Path) -> ObjectRef:
        """Store a file, streaming it (never whole in memory when large)."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> Path:
        """Write the object to ``dest`` atomically (temp file + rename), verified."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Stored objects whose key starts with ``prefix``, in key order."""
        ...

    def put_tree(self, root: Path) -> ObjectRef:
        """Store every file under ``root`` and a manifest of them; return the manifest's ref."""
        ...

    def get_tree(self, manifest_key: str, dest: Path) -> Path:
        """Materialise a stored tree at ``dest`` (absent or empty), verifying every file."""
        ...

    def check(self) -> None:
        """Prove the store is reachable and writable, or raise :class:`StoreError`."""
        ...
