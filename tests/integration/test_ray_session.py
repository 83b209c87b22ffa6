"""The process's one connection to Ray (``workers/driver/ray_session.py``): two threads asking
for Ray at once get one local Ray; shutting it down leaves none of its processes; a local Ray
whose owner was killed is found by its record and stopped by the next process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dataflywheel.config import Settings
from workers.driver import ray_session


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.delenv("FLYWHEEL_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    import ray

    if ray.is_initialized():  # another test's Ray: this one is about starting our own
        ray_session.shutdown()
    yield Settings()
    ray_session.shutdown()


def test_two_threads_asking_at_once_get_one_local_ray_and_shutdown_leaves_none(
    settings: Settings,
) -> None:
    import ray

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    gcs: list[str] = []

    def ask() -> None:
        try:
            barrier.wait()
            ray_session.connect(settings)
            gcs.append(ray.get_runtime_context().gcs_address)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(gcs) == 2 and gcs[0] == gcs[1]
    assert ray_session.owns_local_ray()
    records = list(ray_session.records_dir(settings).glob("*.json"))
    assert [r.name for r in records] == [f"{os.getpid()}.json"]
    token = json.loads(records[0].read_text())["token"]
    ours = ray_session._marked(token)
    names = " ".join(" ".join(p.cmdline()) for p in ours)
    assert "gcs_server" in names and "raylet" in names  # one GCS, one raylet
    assert sum("gcs_server" in " ".join(p.cmdline()) for p in ours) == 1
    # Both asking threads have ended, and the Ray one of them started still answers (Ray's
    # processes die with the thread that started them unless that thread lasts).
    assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2

    ray_session.shutdown()
    assert not ray.is_initialized()
    assert ray_session._marked(token) == []
    assert not records[0].exists()
    ray_session.shutdown()  # a second call is harmless


def test_reap_stops_the_processes_of_a_killed_owner_and_spares_a_live_one(
    settings: Settings,
) -> None:
    folder = ray_session.records_dir(settings)
    folder.mkdir(parents=True)
    # A "killed owner": a process that has exited, whose Ray left a process with its mark.
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()
    started = psutil.Process().create_time()  # any start time: the pid no longer runs
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, ray_session.MARK: "dead-owner-token"},
    )
    (folder / f"{owner.pid}.json").write_text(
        json.dumps({"pid": owner.pid, "started": started, "token": "dead-owner-token"})
    )
    # A live owner (this process) whose processes must not be touched.
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, ray_session.MARK: "live-owner-token"},
    )
    me = psutil.Process()
    (folder / f"{me.pid}.json").write_text(
        json.dumps({"pid": me.pid, "started": me.create_time(), "token": "live-owner-token"})
    )
    (folder / "99999999.json").write_text("{not json")  # cut off mid-write
    try:
        assert orphan.poll() is None
        reaped = ray_session.reap(settings)
        assert [(r.pid, r.processes) for r in reaped] == [(owner.pid, 1)]
        assert "stopped the local Ray left by flywheel process" in str(reaped[0])
        orphan.wait(timeout=10)  # returns (it would sleep 600 s): it was killed
        assert alive.poll() is None
        assert sorted(p.name for p in folder.iterdir()) == [f"{me.pid}.json"]
        assert ray_session.live_owners(settings) == [me.pid]
    finally:
        for proc in (orphan, alive):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
