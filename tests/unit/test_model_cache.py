"""The node's model cache: LRU eviction within a budget, pins by live processes, races.

Runs in: the test process, with real trees in a local-directory store under ``tmp_path``. Pins
held by other processes are real: a child Python process acquires a lease and waits (a live
pin), or is killed with SIGKILL while holding one (a dead process's lease).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataflywheel.config import Settings
from dataflywheel.store import LocalStore, digest_of_key
from workers.model_cache import GIB, ModelCache

TREE_BYTES = 64 * 1024  # two files of 32 KiB


def make_tree(root: Path, seed: int) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(TREE_BYTES // 2))
    sub = root / "tokenizer"
    sub.mkdir()
    (sub / "vocab.bin").write_bytes(bytes([seed % 256]) * (TREE_BYTES // 2))
    return root


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def keys(store: LocalStore, tmp_path: Path) -> list[str]:
    """Five stored model trees of TREE_BYTES each."""
    return [store.put_tree(make_tree(tmp_path / "src" / str(i), i)).key for i in range(5)]


def fetch_in_order(cache: ModelCache, store: LocalStore, keys: list[str]) -> None:
    for key in keys:
        cache.fetch(store, key)
        time.sleep(0.02)  # distinct last-use times, whatever the filesystem's granularity


def cached(cache: ModelCache, keys: list[str]) -> list[int]:
    """Which of ``keys`` the cache holds, by index."""
    held = {e.digest for e in cache.entries()}
    return [i for i, key in enumerate(keys) if digest_of_key(key) in held]


HOLDER = """
import sys, time
from pathlib import Path
from dataflywheel.store import LocalStore
from workers.model_cache import ModelCache
lease = ModelCache(Path(sys.argv[1])).acquire(LocalStore(Path(sys.argv[2])), sys.argv[3])
print("pinned", flush=True)
time.sleep(600)
"""


def hold(cache: ModelCache, store: LocalStore, key: str) -> subprocess.Popen:
    """A child process that pins ``key`` in ``cache`` until it is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache.root), str(store.root), key],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "pinned"
    return child


def stop(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def test_least_recently_used_entries_go_first(
    store: LocalStore, keys: list[str], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=int(3.5 * TREE_BYTES))
    fetch_in_order(cache, store, keys[:3])
    assert cached(cache, keys) == [0, 1, 2]
    fetch_in_order(cache, store, [keys[0]])  # a use: 0 is now the most recent
    fetch_in_order(cache, store, [keys[3]])
    assert cached(cache, keys) == [0, 2, 3]  # 1 was the least recently used
    fetch_in_order(cache, store, [keys[4]])
    assert cached(cache, keys) == [0, 3, 4]
    assert cache.size() <= cache.budget_bytes


def test_an_entry_pinned_by_a_live_process_is_kept(
    store: LocalStore, keys: list[str], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=int(2.5 * TREE_BYTES))
    child = hold(cache, store, keys[0])  # the oldest entry, pinned
    try:
        time.sleep(0.02)
        fetch_in_order(cache, store, keys[1:4])
        assert cached(cache, keys) == [0, 3]
        assert [e.pinned for e in cache.entries()] == [True, False]
        assert cache.size() <= cache.budget_bytes
    finally:
        stop(child)
    # Its process gone, the entry is an ordinary one again: the oldest, so the next to go.
    fetch_in_order(cache, store, [keys[4]])
    assert cached(cache, keys) == [3, 4]
    assert not [p for p in cache.root.iterdir() if ".inuse-" in p.name]  # the stale lease too


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_lease_of_a_dead_process_does_not_pin(
    store: LocalStore, keys: list[str], tmp_path: Path, reaped: bool
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=int(1.5 * TREE_BYTES))
    child = hold(cache, store, keys[0])
    child.send_signal(signal.SIGKILL)  # killed while holding it: the lease file stays behind
    if reaped:
        child.wait(timeout=30)
    else:  # killed but not yet waited for by its parent (a Ray actor before the raylet reaps)
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
    try:
        lease_files = [p for p in cache.root.iterdir() if ".inuse-" in p.name]
        assert len(lease_files) == 1
        assert [e.pinned for e in cache.entries()] == [False]
        fetch_in_order(cache, store, [keys[1]])
        assert cached(cache, keys) == [1]
        assert not lease_files[0].exists()
    finally:
        child.wait(timeout=30)


def test_pinned_entries_over_the_budget_are_kept_with_a_warning(
    store: LocalStore, keys: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=TREE_BYTES)
    with caplog.at_level(logging.WARNING, logger="workers.model_cache"):
        first = cache.acquire(store, keys[0])
        second = cache.acquire(store, keys[1])
    assert cached(cache, keys) == [0, 1]
    assert "over its budget" in caplog.text
    first.release()
    time.sleep(0.02)  # distinct last-use times, whatever the filesystem's granularity
    second.release()
    assert cache.evict() == [digest_of_key(keys[0])]  # released earlier: used less recently
    assert cache.size() <= cache.budget_bytes


def test_a_fetch_after_eviction_brings_the_same_tree_back(
    store: LocalStore, keys: list[str], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=TREE_BYTES)
    first = cache.fetch(store, keys[0])
    original = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    fetch_in_order(cache, store, [keys[1]])
    assert cached(cache, keys) == [1] and not first.exists()
    again = cache.fetch(store, keys[0])
    assert again == first
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()} == (
        original
    )
    assert cached(cache, keys) == [0]
    assert cache.size() <= cache.budget_bytes


def test_downloads_in_progress_stay_and_those_of_dead_processes_go(
    store: LocalStore, keys: list[str], tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=0)
    cache.root.mkdir()
    digest = digest_of_key(keys[0])
    ours = cache.root / f".partial-{digest}-{os.getpid()}-aa"
    ours.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = cache.root / f".partial-{digest}-{dead.pid}-bb"
    deleting = cache.root / f".evicting-{digest}-{dead.pid}-cc"
    for folder in (left, deleting):
        folder.mkdir()
        (folder / "x").write_bytes(b"x")
    cache.evict()
    assert ours.is_dir() and not left.exists() and not deleting.exists()


RACER = f"""
import sys
from pathlib import Path
from dataflywheel.store import LocalStore
from workers.model_cache import ModelCache
cache = ModelCache(Path(sys.argv[1]), budget_bytes=int(sys.argv[2]))
store = LocalStore(Path(sys.argv[3]))
keys = sys.argv[5:] if sys.argv[4] == "forward" else sys.argv[:4:-1]
for _ in range(15):
    for key in keys:
        with cache.acquire(store, key) as path:
            files = sorted(p for p in path.rglob("*") if p.is_file())
            assert len(files) == 2, files
            assert sum(len(p.read_bytes()) for p in files) == {TREE_BYTES}
"""


def test_racing_processes_never_break_a_pinned_reader(
    store: LocalStore, keys: list[str], tmp_path: Path
) -> None:
    """Two processes fetch, read and release trees in turn against a budget that holds
    fewer than they use, so each one's evictions race the other's reads."""
    root = tmp_path / "cache"
    budget = int(1.5 * TREE_BYTES)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(root), str(budget), str(store.root), order, *keys],
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in ("forward", "backward")
    ]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    cache = ModelCache(root, budget_bytes=budget)
    cache.evict()
    assert cache.size() <= budget
    assert not [p for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_the_budget_comes_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FLYWHEEL_MODEL_CACHE_GIB", raising=False)
    assert ModelCache.from_settings(tmp_path).budget_bytes == 50 * GIB
    monkeypatch.setenv("FLYWHEEL_MODEL_CACHE_GIB", "0.5")
    assert ModelCache.from_settings(tmp_path).budget_bytes == GIB // 2
    assert ModelCache.from_settings(tmp_path, Settings(model_cache_gib=2)).budget_bytes == 2 * GIB
    monkeypatch.setenv("FLYWHEEL_MODEL_CACHE_GIB", "-1")
    with pytest.raises(ValueError, match="model_cache_gib"):
        Settings()
