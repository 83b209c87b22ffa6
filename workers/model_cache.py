"""The node's model cache: model trees fetched from the object store, kept within a size budget.

Runs in: Ray worker (generator actors, model scorers). No torch: importing it is cheap and safe
in the flow process.

One folder per node, ``<data dir>/model-cache``, shared by every process there (two generator
actors, a scoring task). Its names:

- ``<digest>/``: a complete model tree. It appears in one rename of a finished download and
  leaves in one rename to an ``.evicting-*`` name, so no reader sees it half written or half
  deleted.
- ``<digest>.inuse-<pid>-<token>``: a lease. While it exists and process ``pid`` lives, the
  entry is pinned: a generator actor holds one for the model it serves (a tokenizer and, for
  vLLM, a reload read the folder long after the load), a scorer for the model it scores with.
  A lease whose process is gone (killed, crashed) pins nothing and is removed by the next
  eviction.
- ``.partial-<digest>-<pid>-<token>/``: a download in progress, never evicted; one left by a
  dead process is removed.
- ``.evicting-<digest>-<pid>-<token>/``: an evicted entry being deleted.
- ``.lock``: held (``flock``) while a lease is written and while an eviction reads the leases
  and renames its victims, so a reader either writes its lease first (and the eviction skips
  the entry) or finds the entry gone (and downloads it again). Downloads and deletions run
  outside the lock.

Last use is the entry folder's mtime, set when it is fetched or found and when a lease on it is
released. After every fetch, unpinned entries are evicted least recently used first until the
folder (entries and downloads in progress) fits the budget; pinned entries and downloads are
kept even when they alone exceed it, with a warning.

Leases name processes by pid (and the process's start time, so a reused pid does not pin), so
the folder must not be shared across pid namespaces (two containers mounting one host folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataflywheel.config import Settings
from dataflywheel.store import ObjectStore, digest_of_key, normalize_key

log = logging.getLogger(__name__)

GIB = 2**30
_ENTRY = re.compile(r"[0-9a-f]{64}")
_LEASE = re.compile(r"(?P<digest>[0-9a-f]{64})\.inuse-(?P<pid>\d+)-[0-9a-f]+")
_WORK = re.compile(r"\.(?:partial|evicting)-(?P<digest>[0-9a-f]{64})-(?P<pid>\d+)-[0-9a-f]+")


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """The process's state letter and start time (clock ticks since boot) from Linux's
    ``/proc``, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields 3 on, after "pid (comm)"
    return fields[0], fields[19]


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started`` (if known);
    a zombie (killed, not yet reaped by its parent) reads nothing any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, now = stat
    return state not in ("Z", "X") and (started is None or now == started)


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _touch(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


@dataclass(frozen=True)
class CacheEntry:
    """A complete model tree in the cache: bytes, last use (epoch seconds), pinned or not."""

    digest: str
    size: int
    last_used: float
    pinned: bool


class Lease:
    """A pin on one cache entry for as long as this process holds it; :meth:`release` (or
    the end of a ``with`` block) marks the entry used now and unpins it."""

    def __init__(self, path: Path, file: Path) -> None:
        self.path = path  # the model folder
        self.file = file

    def release(self) -> None:
        """Unpin (idempotent)."""
        _touch(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.release()


class ModelCache:
    """Model trees under ``root``, evicted down to ``budget_bytes`` in all after each fetch
    as far as unpinned entries allow (None: never evicted)."""

    def __init__(self, root: Path, budget_bytes: int | None = None) -> None:
        if budget_bytes is not None and budget_bytes < 0:
            raise ValueError(f"budget_bytes: must be ≥ 0 (got {budget_bytes})")
        self.root = Path(root)
        self.budget_bytes = budget_bytes

    @classmethod
    def from_settings(cls, root: Path, settings: Settings | None = None) -> ModelCache:
        """The cache at ``root`` with the budget of ``FLYWHEEL_MODEL_CACHE_GIB``, read in this
        process: each node's workers see the driver's value or, when the driver sets none,
        their node's own."""
        gib = (settings or Settings()).model_cache_gib
        return cls(root, int(gib * GIB))

    # --- use ------------------------------------------------------------------------------

    def acquire(self, store: ObjectStore, model_key: str) -> Lease:
        """Pin the tree ``model_key``, fetching it when absent, then evict what the budget
        says; the caller releases the lease when it no longer reads the folder."""
        digest = digest_of_key(normalize_key(model_key))
        final = self.root / digest
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():  # pinned before it is looked for: see the module docstring
            lease_file = self.root / f"{digest}.inuse-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            lease_file.write_text(_start_time(os.getpid()) or "")
        lease = Lease(final, lease_file)
        try:
            if not final.is_dir():
                self._download(store, digest, final)
            _touch(final)
            self.evict()
        except BaseException:
            lease.release()
            raise
        return lease

    def fetch(self, store: ObjectStore, model_key: str) -> Path:
        """The folder of ``model_key``, fetched when absent, unpinned: for a caller that
        reads it at once and lives with a later eviction."""
        lease = self.acquire(store, model_key)
        lease.release()
        return lease.path

    def _download(self, store: ObjectStore, digest: str, final: Path) -> None:
        partial = self.root / f".partial-{digest}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            store.get_tree(normalize_key(digest), partial)
            try:
                os.rename(partial, final)
            except OSError:
                if not final.is_dir():  # not another process winning the race: a real error
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    # --- eviction ---------------------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """The complete trees, least recently used first."""
        pinned = self._pins()
        found = []
        for path in self._children():
            if _ENTRY.fullmatch(path.name) and path.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    used = path.stat().st_mtime
                    found.append(CacheEntry(path.name, _size(path), used, path.name in pinned))
        return sorted(found, key=lambda e: (e.last_used, e.digest))

    def evict(self) -> list[str]:
        """Evict unpinned entries, least recently used first, until the cache fits its
        budget; remove leases, downloads and deletions left by dead processes. Returns the
        evicted digests."""
        doomed: list[Path] = []
        evicted: list[str] = []
        with self._locked():
            doomed += self._claim_leftovers()
            if self.budget_bytes is not None:
                entries = self.entries()
                total = self._download_bytes() + sum(e.size for e in entries)
                for entry in entries:
                    if total <= self.budget_bytes:
                        break
                    if entry.pinned:
                        continue
                    doomed.append(self._claim(self.root / entry.digest, entry.digest))
                    evicted.append(entry.digest)
                    total -= entry.size
                if total > self.budget_bytes:
                    log.warning(
                        "model cache %s holds %.2f GiB in use or being fetched, over its "
                        "budget of %.2f GiB (FLYWHEEL_MODEL_CACHE_GIB): kept, since a live "
                        "process reads them",
                        self.root,
                        total / GIB,
                        self.budget_bytes / GIB,
                    )
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return evicted

    def size(self) -> int:
        """Bytes of complete entries and downloads in progress."""
        return self._download_bytes() + sum(e.size for e in self.entries())

    def _download_bytes(self) -> int:
        return sum(_size(p) for p in self._children() if p.name.startswith(".partial-"))

    def _children(self) -> list[Path]:
        try:
            return list(self.root.iterdir())
        except FileNotFoundError:
            return []

    def _pins(self) -> set[str]:
        """Digests with a lease of a live process; leases of dead ones are removed."""
        pinned = set()
        for path in self._children():
            match = _LEASE.fullmatch(path.name)
            if not match:
                continue
            try:
                started = path.read_text().strip() or None
            except FileNotFoundError:
                continue  # released meanwhile
            if _alive(int(match["pid"]), started):
                pinned.add(match["digest"])
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return pinned

    def _claim(self, path: Path, digest: str) -> Path:
        """Rename ``path`` to a deletion name of this process (atomic: readers see it whole
        or not at all; only one evictor wins it)."""
        target = self.root / f".evicting-{digest}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.rename(path, target)
        return target

    def _claim_leftovers(self) -> list[Path]:
        claimed = []
        for path in self._children():
            match = _WORK.fullmatch(path.name)
            if match and not _alive(int(match["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    claimed.append(self._claim(path, match["digest"]))
        return claimed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["GIB", "CacheEntry", "Lease", "ModelCache"]
