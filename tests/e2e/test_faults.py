"""Fault injection with real processes and services; after each fault the round completes
and every invariant of the run holds (``dataflywheel/db/invariants.py``).

- ``kill -9`` the generator actor's process while a round generates: Ray restarts the actor
  (``max_restarts``); the generate task sees its calls fail, waits for the restart and
  redoes the shards that were in flight (a real ``flywheel run`` subprocess).
- A generator that stops producing tokens (a real stall injected into its backend): the
  health probe (``workers/driver/health.py``) notices within the stall deadline, a fresh actor
  replaces it and the shard is retried; the samples equal a clean run's.
- ``kill -9`` every process of the second Ray node of a local two-node cluster while a
  verification task runs on it: Ray retries the task (``max_retries``) on the surviving node.
- Stop and restart the PostgreSQL server while a generation stage ingests samples: the
  stage reconnects (pre-ping) or fails and is retried by Prefect from the shard ledger.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from invariant_support import violations
from sqlalchemy.orm import Session

from dataflywheel.config import Settings
from dataflywheel.db import embedded, invariants, migrate
from dataflywheel.db.session import make_engine
from dataflywheel.spec import load_spec
from dataflywheel.store import store_from_settings
from tests.invariant_support import query
from tests.local_cluster import LocalCluster
from workers.driver import ray_session

pytestmark = pytest.mark.slow


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
    tiny_spec.pop("warmup")  # the fault hits round 1; a warm-up round adds nothing here
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
            if query(db_url, running)[0][0]:
                for actor in _generator_processes(data_dir):
                    actor.send_signal(signal.SIGKILL)
                    killed.append(actor.pid)
            time.sleep(0.1)
        assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_id,) = query(db_url, "SELECT id FROM runs")[0]
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    attempts = query(
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


def _digests(db_url: str, run_id: int) -> list[tuple]:
    """Per round: dataset and checkpoint digests, gate decision, every sample's text."""
    return query(
        db_url,
        "SELECT r.index, d.digest, c.digest, c.status, (SELECT string_agg(s.text, '|' ORDER BY "
        "p.content_hash, s.purpose, s.sample_index) FROM samples s JOIN prompts p ON "
        "p.id = s.prompt_id WHERE s.round_id = r.id) FROM rounds r LEFT JOIN datasets d "
        "ON d.round_id = r.id LEFT JOIN checkpoints c ON c.round_id = r.id "
        "WHERE r.run_id = :r ORDER BY r.index",
        r=run_id,
    )


class _Saboteur(threading.Thread):
    """Runs ``act`` once in the background, beside a flow running in this process; keeps
    the first error for the test to raise."""

    def __init__(self, act: Callable[[threading.Event], None]) -> None:
        super().__init__(daemon=True)
        self.act, self.stop, self.error = act, threading.Event(), None

    def run(self) -> None:
        try:
            self.act(self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=120)
        if self.error is not None:
            raise self.error


def _spec(tmp_path: Path, spec: dict):
    spec_file = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    return load_spec(spec_file)


def test_stalled_generator_is_replaced_and_its_shard_retried(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    import ray

    from flows.flywheel_run import flywheel_run
    from tasks import context
    from workers.driver.ray_session import NAMESPACE

    tiny_spec["rounds"] = 1
    tiny_spec.pop("warmup")  # the fault hits round 1; a warm-up round adds nothing here
    spec = _spec(tmp_path, tiny_spec)
    clean = flywheel_run(spec)  # the rows a run without the fault writes
    ray_session.shutdown()

    os.environ["FLYWHEEL_GENERATION_STALL_TIMEOUT_S"] = "5"
    context.reset()
    stalled: list[str] = []

    def stall(stop: threading.Event) -> None:
        # The next run's generator, as soon as it exists (before its first shard: creating
        # it imports torch, then it loads the model): one more decoding step, then none.
        name = f"generator-run{clean + 1}-0"
        while not stop.is_set():
            if ray.is_initialized():
                try:
                    actor = ray.get_actor(name, namespace=NAMESPACE)
                except ValueError:
                    pass
                else:
                    ray.get(actor.inject_stall.remote(after_steps=1), timeout=300)
                    stalled.append(name)
                    return
            stop.wait(0.05)

    saboteur = _Saboteur(stall)
    saboteur.start()
    started = time.monotonic()
    faulted = flywheel_run(spec)
    saboteur.finish()
    assert faulted == clean + 1 and stalled
    assert time.monotonic() - started < 600
    # The first generation of the run (round 1's baseline) stalled and was redone.
    assert query(
        db_url,
        "SELECT s.stage, s.shard_index, s.attempt, s.status FROM stage_shards s JOIN rounds r "
        "ON r.id = s.round_id WHERE r.run_id = :r AND s.stage LIKE 'generate%%' "
        "AND s.attempt > 1",
        r=faulted,
    ) == [("generate_baseline", 0, 2, "done")]
    assert violations(db_url, flywheel_env, faulted) == []
    assert _digests(db_url, faulted) == _digests(db_url, clean)


def test_killed_worker_node_mid_verification_the_round_completes(
    flywheel_env: Settings,
    tiny_spec: dict,
    db_url: str,
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    import ray

    from flows.flywheel_run import flywheel_run
    from tasks import context
    from workers.driver.ray_session import NAMESPACE

    tiny_spec["rounds"] = 1
    tiny_spec.pop("warmup")  # the fault hits round 1; a warm-up round adds nothing here
    tiny_spec["prompts"]["num_prompts"] = 1400  # 4,200 train samples: five verification shards
    # The head has a CPU for the generator actor (reserved here: by default it takes none)
    # and one for other work, so verification shards spread to the second node; that node
    # joins once the actor lives on the head, so killing it leaves the generator alone.
    tiny_spec["resources"] = {"generator_cpus": 1}
    spec = _spec(tmp_path, tiny_spec)
    assert spec.resources.generator_cpus == 1
    os.environ["FLYWHEEL_RAY_ADDRESS"] = local_cluster.start_head(num_cpus=2)
    context.reset()
    killed: dict[str, object] = {}
    # The second node's workers pause in the first verification shard they start (a fault
    # point, dataflywheel/faults.py), so the kill lands while that shard provably runs there.
    paused = flywheel_env.resolved_data_dir / "test-pause" / "score_shard"

    def kill_mid_verification(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if ray.is_initialized():
                    ray.get_actor("generator-run1-0", namespace=NAMESPACE)
                    break
            except ValueError:
                pass
            stop.wait(0.1)
        local_cluster.add_node(
            "second",
            num_cpus=1,
            resources={"second_node": 1},
            env={"FLYWHEEL_TEST_PAUSE_AT": "score_shard"},
        )
        while not stop.is_set() and "node_id" not in killed:
            for node in ray.nodes():
                if node["Alive"] and "second_node" in node["Resources"]:
                    killed["node_id"] = node["NodeID"]
            stop.wait(0.1)
        while not stop.is_set():
            if paused.exists():
                # The time before the kill: the paused shard's retry may finish on the head
                # before kill_node has waited for every process of the node to die.
                killed["at"] = time.time()
                killed["pids"] = local_cluster.kill_node("second")
                return
            stop.wait(0.05)

    saboteur = _Saboteur(kill_mid_verification)
    saboteur.start()
    run_id = flywheel_run(spec)
    saboteur.finish()
    assert killed.get("pids"), "no verification task ran on the second node"
    assert not local_cluster.processes("second")
    deadline = time.monotonic() + 120  # the GCS declares a node dead after missed heartbeats
    while time.monotonic() < deadline and any(
        n["Alive"] for n in ray.nodes() if n["NodeID"] == killed["node_id"]
    ):
        time.sleep(1)
    assert [n["Alive"] for n in ray.nodes() if n["NodeID"] == killed["node_id"]] == [False]
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    shards = query(
        db_url,
        "SELECT s.shard_index, s.status, s.worker_node, extract(epoch FROM s.finished_at) "
        "FROM stage_shards s JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r "
        "AND r.index = 1 AND s.stage = 'verify_train' ORDER BY 1",
        r=run_id,
    )
    assert len(shards) >= 3 and {s[1] for s in shards} == {"done"}
    # Whatever finished after the kill (the paused shard at least) ran on the surviving node.
    after = [s for s in shards if s[3] > killed["at"]]
    assert after and {s[2] for s in after} == {ray.get_runtime_context().get_node_id()}
    assert violations(db_url, flywheel_env, run_id) == []


def test_postgres_restart_mid_ingest_the_stage_is_retried(
    flywheel_env: Settings, tiny_spec: dict, tmp_path: Path
) -> None:
    from flows.flywheel_run import flywheel_run
    from tasks import context

    # A server of its own (the session's also holds the Prefect server's state), outside
    # pytest's temp root (see server_tmp in tests/conftest.py).
    root = Path(tempfile.mkdtemp(prefix="fw-restart-pg-"))
    pgdata = root / "postgres"
    db_url = embedded.start(pgdata).url
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    engine.dispose()
    os.environ["FLYWHEEL_DATABASE_URL"] = db_url
    context.reset()
    tiny_spec["rounds"] = 1
    tiny_spec.pop("warmup")  # the fault hits round 1; a warm-up round adds nothing here
    tiny_spec["prompts"]["num_prompts"] = 100  # two generation shards
    spec = _spec(tmp_path, tiny_spec)
    restarted: dict[str, float] = {}

    def restart_mid_ingest(stop: threading.Event) -> None:
        running = (
            "SELECT count(*) FROM stage_shards s JOIN rounds r ON r.id = s.round_id "
            "WHERE r.index = 1 AND s.stage = 'generate_train' AND s.status = 'running'"
        )
        while not stop.is_set():
            if query(db_url, running)[0][0]:
                before = embedded.running(pgdata)
                restarted["at"] = time.time()
                assert embedded.stop(pgdata)
                stop.wait(3)  # down long enough for the stage to notice
                after = embedded.start(pgdata)
                assert before is not None and after.pid != before.pid
                restarted["up"] = time.time()
                return
            stop.wait(0.05)

    saboteur = _Saboteur(restart_mid_ingest)
    saboteur.start()
    try:
        try:
            run_id = flywheel_run(spec)
        finally:
            saboteur.finish()  # its error first: a failed restart explains a failed run
        assert restarted.get("up"), "the server was never restarted"
        assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
        shards = query(
            db_url,
            "SELECT s.shard_index, s.status, extract(epoch FROM s.finished_at) FROM stage_shards "
            "s JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r AND r.index = 1 "
            "AND s.stage = 'generate_train' ORDER BY 1",
            r=run_id,
        )
        assert [s[1] for s in shards] == ["done", "done"]
        assert max(s[2] for s in shards) > restarted["up"]  # the stage went on after it
        assert violations(db_url, flywheel_env, run_id) == []
    finally:
        context.reset()
        embedded.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)
