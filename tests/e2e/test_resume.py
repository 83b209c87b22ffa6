"""Crash safety with real processes: ``kill -9`` the flow process mid-round, then
``flywheel resume`` finishes the run with the same digests as an uninterrupted run.

The run is a real ``flywheel run`` subprocess (its own process group) against the session's
Prefect server, PostgreSQL and a local store. The test watches the shard ledger until the
round's first generation shard is done, SIGKILLs the whole process group, checks that no
process of the run survives, resumes, and compares every round's dataset and checkpoint
digest with an uninterrupted run of the same spec. Resuming the finished run again changes
no row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from invariant_support import violations

from dataflywheel.config import Settings
from dataflywheel.spec import load_spec
from tests.invariant_support import query

pytestmark = pytest.mark.slow

TABLES = (
    "prompts",
    "samples",
    "scores",
    "datasets",
    "dataset_members",
    "checkpoints",
    "checkpoint_datasets",
    "evaluations",
    "evaluation_results",
    "rounds",
    "stage_shards",
)


def _digests(db_url: str, run_id: int) -> list[tuple]:
    return query(
        db_url,
        "SELECT r.index, r.status, d.digest, c.digest, c.status FROM rounds r "
        "LEFT JOIN datasets d ON d.round_id = r.id LEFT JOIN checkpoints c ON c.round_id = r.id "
        "WHERE r.run_id = :r ORDER BY r.index",
        r=run_id,
    )


def _counts(db_url: str) -> dict[str, int]:
    return {t: query(db_url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def _run_processes(data_dir: str) -> list[psutil.Process]:
    """Live processes started for this test's run (they inherit FLYWHEEL_DATA_DIR)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (
                proc.pid != os.getpid()
                and proc.environ().get("FLYWHEEL_DATA_DIR") == data_dir
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _flywheel(*args: str, env: dict[str, str], **kw: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dataflywheel.cli", *args],
        env=env,
        start_new_session=True,  # its own process group, so kill -9 reaches all of it
        **kw,
    )


def test_kill_flow_mid_round_then_resume(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    tiny_spec["rounds"] = 1
    tiny_spec["prompts"]["num_prompts"] = 100  # 300 requests: two generation shards of 256
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    env = dict(os.environ)
    data_dir = env["FLYWHEEL_DATA_DIR"]
    log = (tmp_path / "run.log").open("w")
    proc = _flywheel("run", str(spec_file), env=env, stdout=log, stderr=subprocess.STDOUT)
    ledger = (
        "SELECT s.shard_index, s.status FROM stage_shards s JOIN rounds r ON r.id = s.round_id "
        "WHERE r.index = 1 AND s.stage = 'generate_train' ORDER BY 1"
    )
    deadline = time.monotonic() + 300
    try:
        while ("done",) not in [(s,) for _, s in query(db_url, ledger)]:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no generation shard finished in 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = dict(query(db_url, ledger))
    (run_id,), *_ = query(db_url, "SELECT id FROM runs")
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("running",)]
    assert query(db_url, "SELECT status FROM rounds WHERE run_id = :r AND index = 1", r=run_id) == [
        ("running",)
    ]
    # Nothing of the killed run keeps running (its local Ray shares its fate).
    deadline = time.monotonic() + 30
    while _run_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = _run_processes(data_dir)
    for p in leftovers:
        p.kill()
    assert not leftovers, [p.cmdline()[:3] for p in leftovers]

    resumed = _flywheel("resume", str(run_id), env=env, stdout=subprocess.PIPE, text=True)
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    # Finished shards were skipped (still their first attempt), the rest were done.
    attempts = dict(
        query(
            db_url,
            "SELECT s.shard_index, s.attempt FROM stage_shards s JOIN rounds r "
            "ON r.id = s.round_id WHERE r.run_id = :r AND r.index = 1 "
            "AND s.stage = 'generate_train' AND s.status = 'done'",
            r=run_id,
        )
    )
    assert len(attempts) == 2
    for shard, status in at_kill.items():
        if status == "done":
            assert attempts[shard] == 1
    assert violations(db_url, flywheel_env, run_id) == []

    # The same digests as an uninterrupted run of the same spec.
    from flows.flywheel_run import flywheel_run

    reference = flywheel_run(load_spec(spec_file))
    assert _digests(db_url, run_id) == _digests(db_url, reference)
    assert all(d[2] and d[3] for d in _digests(db_url, run_id))

    # Resuming a finished run changes nothing.
    before = _counts(db_url), _digests(db_url, run_id)
    again = _flywheel("resume", str(run_id), env=env, stdout=subprocess.PIPE, text=True)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert (_counts(db_url), _digests(db_url, run_id)) == before
