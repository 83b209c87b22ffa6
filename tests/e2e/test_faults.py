"""Fault injection with real processes: ``kill -9`` the generator actor's process while a
round generates; the round still completes and every invariant holds.

The run is a real ``flywheel run`` subprocess. When the ledger shows a generation shard of
round 1 running, the test SIGKILLs the Ray worker process that hosts the run's
``GeneratorWorker``. Ray restarts the actor (``max_restarts``), the failed call fails the
``generate_samples`` task, Prefect retries it, and the retry redoes only the unfinished shards.
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
import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from dataflywheel.config import Settings
from dataflywheel.db import invariants
from dataflywheel.db.session import make_engine
from dataflywheel.store import store_from_settings

pytestmark = pytest.mark.slow


def _q(db_url: str, sql: str, **params: object) -> list[tuple]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    finally:
        engine.dispose()


def _generator_processes(data_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if "GeneratorWorker" in " ".join(proc.cmdline()) and (
                proc.environ().get("FLYWHEEL_DATA_DIR") == data_dir
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_killed_generator_actor_is_restarted_and_the_round_completes(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    tiny_spec["rounds"] = 1
    tiny_spec["prompts"]["num_prompts"] = 100  # two generation shards
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    env = dict(os.environ)
    data_dir = env["FLYWHEEL_DATA_DIR"]
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflywheel.cli", "run", str(spec_file)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = (
        "SELECT count(*) FROM stage_shards s JOIN rounds r ON r.id = s.round_id "
        "WHERE r.index = 1 AND s.stage = 'generate_train' AND s.status = 'running'"
    )
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not killed:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "round 1 never started generating"
            if _q(db_url, running)[0][0]:
                for actor in _generator_processes(data_dir):
                    actor.send_signal(signal.SIGKILL)
                    killed.append(actor.pid)
            time.sleep(0.1)
        assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_id,) = _q(db_url, "SELECT id FROM runs")[0]
    assert _q(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    attempts = _q(
        db_url,
        "SELECT s.shard_index, s.attempt, s.status FROM stage_shards s JOIN rounds r "
        "ON r.id = s.round_id WHERE r.run_id = :r AND r.index = 1 "
        "AND s.stage = 'generate_train' ORDER BY 1",
        r=run_id,
    )
    assert [a[2] for a in attempts] == ["done", "done"]
    assert max(a[1] for a in attempts) >= 2, attempts  # the interrupted shard was redone
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            found = invariants.check_run(session, run_id)
            found += invariants.check_objects(session, run_id, store_from_settings(flywheel_env))
    finally:
        engine.dispose()
    assert [str(v) for v in found] == []
    # The restarted actor was released with the run: no generator of this run is left.
    assert not [p for p in _generator_processes(data_dir) if p.pid not in killed]
