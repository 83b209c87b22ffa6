"""Content addresses: sha256 digests and the ``sha256/<first 2 hex>/<digest>`` keys.

Runs in: anywhere (pure apart from reading the file it is asked to hash). The two-hex shard
keeps directories and S3 listings small; it is derived from the digest, so keys are
deterministic and a key alone is enough to verify the bytes read back.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dataflywheel.store.api import InvalidKeyError

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for throughput, small enough to stream
# What ``check()`` writes and reads back. It is an ordinary content-addressed object, so the
# probe needs no delete permission and re-running it changes nothing.
PROBE_BYTES = b"dataflywheel object store probe\n"
_KEY_RE = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{64})")
_DIGEST_RE = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


def digest_of_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest_of_file(path: Path | str) -> str:
    """Hex sha256 of a file's content, read in chunks (constant memory)."""
    return hash_file(Path(path))[0]


def hash_file(path: Path) -> tuple[str, int]:
    """Hex sha256 and byte count of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def key_for_digest(digest: str) -> str:
    """The store key of a hex sha256 digest."""
    return normalize_key(digest)


def normalize_key(key: str) -> str:
    """Canonical key for ``sha256/ab/<hex>``, a bare 64-hex digest or ``sha256:<hex>``.

    Raises :class:`InvalidKeyError` for anything else, so a typo never reaches a backend.
    """
    text = key.strip() if isinstance(key, str) else ""
    bare = _DIGEST_RE.fullmatch(text)
    if bare:
        digest = bare.group(1).lower()
        return f"sha256/{digest[:2]}/{digest}"
    match = _KEY_RE.fullmatch(text)
    if match and match.group(2).startswith(match.group(1)):
        return text
    raise InvalidKeyError(
        f"invalid object key {key!r}: expected sha256/<first 2 hex>/<64 hex digest> "
        "or a bare 64-character hex sha256 digest (as printed by `flywheel store put`)"
    )


def is_key(key: str) -> bool:
    """Whether ``key`` is already a canonical store key (used to filter listings)."""
    match = _KEY_RE.fullmatch(key)
    return bool(match and match.group(2).startswith(match.group(1)))


def digest_of_key(key: str) -> str:
    """The hex digest a (canonical) key promises."""
    return key.rsplit("/", 1)[1]
