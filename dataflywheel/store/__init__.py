"""Content-addressed object store: a local directory or S3 (boto3) behind one API.

Runs in: anywhere (CLI, Prefect tasks, Ray workers). Postgres records keys; the store holds
the bytes under ``sha256/<first 2 hex>/<digest>``, so a key is deterministic, a put of
existing content is a no-op, and every read is checked against the digest in its key.
Open a store with :func:`store_from_settings` (or :func:`open_store` for an explicit URI).
"""

from __future__ import annotations

from pathlib import Path

from dataflywheel.config import Settings
from dataflywheel.store.api import (
    CorruptObjectError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectRef,
    ObjectStore,
    StoreError,
)
from dataflywheel.store.keys import (
    digest_of_bytes,
    digest_of_file,
    digest_of_key,
    key_for_digest,
    normalize_key,
)
from dataflywheel.store.local import LocalStore
from dataflywheel.store.s3 import S3Store
from dataflywheel.store.tree import TreeEntry, read_tree

__all__ = [
    "CorruptObjectError",
    "InvalidKeyError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectRef",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "TreeEntry",
    "digest_of_bytes",
    "digest_of_file",
    "digest_of_key",
    "key_for_digest",
    "normalize_key",
    "open_store",
    "read_tree",
    "store_from_settings",
]


def open_store(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> ObjectStore:
    """The store at ``uri``: ``s3://bucket/prefix``, ``file:///path`` or a directory path.

    The S3 options are ignored for a local store.
    """
    text = (uri or "").strip()
    if not text:
        raise StoreError(
            "FLYWHEEL_STORE_URI is empty: set it to a directory or s3://bucket/prefix, or "
            "unset it to use <FLYWHEEL_DATA_DIR>/objects"
        )
    if text.startswith("s3://"):
        return S3Store(
            text,
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    if text.startswith("file://"):
        return LocalStore(Path(text[len("file://") :]))
    if "://" in text:
        raise StoreError(
            f"FLYWHEEL_STORE_URI={text!r}: unsupported scheme; use a directory path, "
            "file:///path or s3://bucket/prefix"
        )
    return LocalStore(Path(text))


def store_from_settings(settings: Settings) -> ObjectStore:
    """The store the settings name (``FLYWHEEL_STORE_URI``, default ``<data_dir>/objects``)."""
    secret = settings.s3_secret_access_key
    return open_store(
        settings.resolved_store_uri,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
    )
