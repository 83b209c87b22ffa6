"""Directory trees (e.g. a model folder) as one content-addressed manifest.

Runs in: anywhere. Every file is stored as its own object, then a canonical JSON manifest
``{"kind": "tree", "files": [{"path", "digest", "size"}, ...]}`` (sorted by path, sorted
keys, no whitespace) is stored too; its key names the whole tree, so the same folder always
gets the same key and unchanged files are never uploaded twice. Empty directories and file
modes are not recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflywheel.store.api import CorruptObjectError, ObjectRef, StoreError
from dataflywheel.store.fsio import TEMP_PREFIX, fsync_dir
from dataflywheel.store.keys import normalize_key

if TYPE_CHECKING:
    from dataflywheel.store.api import ObjectStore

MANIFEST_KIND = "tree"
# Model folders hold a few multi-GB shards: a handful of parallel transfers fills the link.
MAX_WORKERS = 4


@dataclass(frozen=True)
class TreeEntry:
    """One file of a tree: its POSIX path relative to the tree root, digest and size."""

    path: str
    digest: str
    size: int


def put_tree(store: ObjectStore, root: Path) -> ObjectRef:
    """Store every file under ``root``, then the manifest; return the manifest's ref."""
    if not root.is_dir():
        raise StoreError(f"{root} is not a directory: store a single file with put_file")
    files = _walk(root)
    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        refs = list(pool.map(store.put_file, [path for _, path in files]))
    entries = [
        TreeEntry(rel, ref.digest, ref.size) for (rel, _), ref in zip(files, refs, strict=True)
    ]
    return store.put_bytes(manifest_bytes(entries))


def manifest_bytes(entries: list[TreeEntry]) -> bytes:
    """The canonical manifest: same files, same bytes, same key."""
    doc = {
        "kind": MANIFEST_KIND,
        "files": [
            {"path": e.path, "digest": e.digest, "size": e.size}
            for e in sorted(entries, key=lambda e: e.path)
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def read_tree(store: ObjectStore, manifest_key: str) -> list[TreeEntry]:
    """The validated entries of a stored tree manifest."""
    key = normalize_key(manifest_key)
    return parse_manifest(store.get_bytes(key), key)


def parse_manifest(data: bytes, key: str) -> list[TreeEntry]:
    """Validate a manifest completely before anything is written from it."""

    def bad(why: str) -> StoreError:
        return StoreError(f"object {key} is not a valid tree manifest: {why}")

    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
        raise bad('expected {"kind": "tree", "files": [...]}; was it stored with put_file?')
    files = doc.get("files")
    if not isinstance(files, list):
        raise bad('"files" is not a list')
    entries: list[TreeEntry] = []
    for item in files:
        if not isinstance(item, dict):
            raise bad(f"entry {item!r} is not an object")
        path, digest, size = item.get("path"), item.get("digest"), item.get("size")
        check_tree_path(path, bad)
        if not isinstance(digest, str):
            raise bad(f"entry {path!r} has no digest")
        try:
            normalize_key(digest)
        except StoreError as exc:
            raise bad(f"entry {path!r} has digest {digest!r}") from exc
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"entry {path!r} has size {size!r}")
        entries.append(TreeEntry(path, digest.lower(), size))
    paths = {e.path for e in entries}
    if len(paths) != len(entries):
        raise bad("a path is listed twice")
    parents = {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}
    if paths & parents:
        raise bad(f"{sorted(paths & parents)[0]!r} is both a file and a directory")
    return entries


def check_tree_path(path: object, bad: Any = StoreError) -> None:
    """Reject a path that could land outside the destination: absolute, ``..``, empty."""
    if not isinstance(path, str) or not path:
        raise bad(f"path {path!r} is not a non-empty string")
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise bad(
            f"path {path!r} escapes the destination or is not normalised (absolute, '..', "
            "'.', empty components and backslashes are refused)"
        )


def get_tree(store: ObjectStore, manifest_key: str, dest: Path) -> Path:
    """Materialise a tree at ``dest``, which must be absent or an empty directory.

    Files are fetched (each verified) into a temp directory beside ``dest`` that is renamed
    onto it at the end, so ``dest`` appears complete or not at all.
    """
    entries = read_tree(store, manifest_key)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError(f"{dest} already exists and is not an empty directory: choose a new one")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=TEMP_PREFIX))
    except OSError as exc:
        raise StoreError(f"cannot create {dest}: {exc.strerror or exc}") from exc
    try:

        def fetch(entry: TreeEntry) -> None:
            target = store.get_file(entry.digest, tmp.joinpath(*entry.path.split("/")))
            if target.stat().st_size != entry.size:
                raise CorruptObjectError(
                    f"tree {manifest_key}: {entry.path} is {target.stat().st_size} bytes, "
                    f"the manifest says {entry.size}"
                )

        with ThreadPoolExecutor(MAX_WORKERS) as pool:
            list(pool.map(fetch, entries))
        for dirpath, _, _ in os.walk(tmp):
            os.chmod(dirpath, 0o755)  # mkdtemp makes 0700; the tree is for everyone to read
        # rename(2) is atomic and replaces an empty directory.
        os.rename(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot create {dest}: {exc.strerror or exc}") from exc
        raise
    fsync_dir(dest.parent)
    return dest


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) for every file under ``root``, sorted by path."""

    def fail(exc: OSError) -> None:
        raise StoreError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc

    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise StoreError(
                    f"{os.path.join(dirpath, name)} is a symlink to a directory; copy it into "
                    "the tree instead (links to files are stored as the file they point to)"
                )
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_file():
                raise StoreError(f"{path} is not a regular file (or a link to one)")
            rel = path.relative_to(root).as_posix()
            check_tree_path(rel)
            files.append((rel, path))
    return sorted(files)
