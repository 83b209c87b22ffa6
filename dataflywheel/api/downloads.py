"""Download links for stored bytes: presigned GET URLs on S3, or this API's own streaming
endpoint (``/objects/{key}``) for a local store.

Runs in: the API process. A checkpoint is a folder stored as a tree manifest
(``store/tree.py``), so its download is one link per file plus the manifest itself; a
dataset is one file. Presigned URLs are signed with the same credentials and endpoint the
store uses (``FLYWHEEL_S3_*``) and carry no API key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dataflywheel.config import Settings
from dataflywheel.store import LocalStore, ObjectStore, S3Store, normalize_key, read_tree
from dataflywheel.store.keys import key_for_digest

CHUNK = 1 << 20


def _presigner(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    secret = settings.s3_secret_access_key
    session = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.s3_region,
    )
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def link_maker(
    settings: Settings, store: ObjectStore, api_url: Callable[[str], str], expiry: int
) -> tuple[Callable[[str], str], int | None]:
    """A function key -> URL for this store, and the URLs' lifetime (None: no expiry)."""
    if isinstance(store, S3Store):
        client = _presigner(settings)
        base = f"{store.prefix}/" if store.prefix else ""  # the layout S3Store writes

        def presign(key: str) -> str:
            return client.generate_presigned_url(
                "get_object",
                Params={"Bucket": store.bucket, "Key": base + normalize_key(key)},
                ExpiresIn=expiry,
            )

        return presign, expiry
    return api_url, None


def files_of(store: ObjectStore, kind: str, object_key: str) -> list[tuple[str, str, int | None]]:
    """(path, key, size) of what a download hands out: a checkpoint's files and manifest,
    or a dataset's single file."""
    if kind != "checkpoint":
        return [("", normalize_key(object_key), None)]
    entries = read_tree(store, object_key)
    return [(e.path, key_for_digest(e.digest), e.size) for e in entries] + [
        ("MANIFEST.json", normalize_key(object_key), None)
    ]


def local_path(store: ObjectStore, key: str) -> Path | None:
    """The file behind ``key`` in a local store (None if absent or the store is not local)."""
    if not isinstance(store, LocalStore):
        return None
    path = store.root.joinpath(*normalize_key(key).split("/"))
    return path if path.is_file() else None


def stream(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
