"""Crash recovery as users run it: the ``flywheel`` CLI as a subprocess on a fresh data
directory, with the embedded PostgreSQL, the local Prefect server and the local Ray that the
CLI itself starts (no ``FLYWHEEL_RAY_ADDRESS``, no fixture's Ray or Prefect), peers 2 like
the main example.

The run is killed with SIGKILL (the CLI process alone, as ``kill -9 PID`` does) at every
stage of a round in turn: a fault point (``dataflywheel/faults.py``) pauses the process at a
place the stage has provably reached and not passed, and the test kills it there. Each kill is
followed by exactly one ``flywheel resume``, which must clean up what the killed process left
(its local Ray's processes, its Prefect flow runs still ``Running``) and carry the run through
the killed stage; the next fault point then stops that resume in turn. The last resume runs
to the end and exits 0. The run must then hold every invariant and equal an uninterrupted
run of the same spec row for row and digest for digest (CPU fp32 is deterministic); no Ray
process of ours may be left and no flow run left unfinished in Prefect. With one model, the
run is killed mid-generation, mid-training and between rounds, at the same time, in a second
data directory (two users on one machine).

Then the rest of the user's sequence on the recovered run: ``check``, ``replay --round 1``
(the replayed round equal to the source: ``diff`` exits 0) and ``rescore`` exit 0; a replay
whose packages differ warns and ``--strict`` refuses; one whose inputs left the store is
refused naming them; ``check`` catches a damaged run; ``db stop`` is refused while the
Prefect server uses the database; and ``down`` stops everything the data directory started.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml

from dataflywheel import prefect_owners
from dataflywheel.db.session import make_engine
from dataflywheel.prefect_server import healthy
from tests.conftest import server_tmp
from tests.e2e.conftest import TINY_SPEC
from tests.invariant_support import query
from workers.driver import ray_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(25 * 60)]

ROOT = Path(__file__).resolve().parents[2]
# Every stage of round 1 in order, then the start of round 2 (between rounds).
KILL_POINTS = (
    "generate@1",
    "verify@1",
    "select@1",
    "train@1",
    "evaluate@1",
    "promote@1",
    "round@2",
)
# With one model: mid-generation, mid-training and between rounds.
POINTS_PEERS_1 = ("generate@1", "train@1", "round@2")
TABLES = {
    "samples": "SELECT count(*) FROM samples s JOIN rounds r ON r.id = s.round_id "
    "WHERE r.run_id = :r",
    "scores": "SELECT count(*) FROM scores x JOIN samples s ON s.id = x.sample_id "
    "JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r",
    "datasets": "SELECT count(*) FROM datasets WHERE run_id = :r",
    "dataset_members": "SELECT count(*) FROM dataset_members m JOIN datasets d "
    "ON d.id = m.dataset_id WHERE d.run_id = :r",
    "checkpoints": "SELECT count(*) FROM checkpoints WHERE run_id = :r",
    "checkpoint_datasets": "SELECT count(*) FROM checkpoint_datasets x JOIN checkpoints c "
    "ON c.id = x.checkpoint_id WHERE c.run_id = :r",
    "evaluations": "SELECT count(*) FROM evaluations e JOIN checkpoints c "
    "ON c.id = e.checkpoint_id WHERE c.run_id = :r",
    "rounds": "SELECT count(*) FROM rounds WHERE run_id = :r",
    "stage_shards": "SELECT count(*) FROM stage_shards s JOIN rounds r ON r.id = s.round_id "
    "WHERE r.run_id = :r AND s.status = 'done'",
}


@dataclass
class UserMachine:
    """A fresh data directory and the environment a user's shell would have."""

    data_dir: Path
    env: dict[str, str]
    logs: Path
    started: list[subprocess.Popen] = field(default_factory=list)

    def spec_for(self, peers: int) -> Path:
        """The tiny spec (warm-up + 2 rounds) with ``peers`` models."""
        spec = copy.deepcopy(TINY_SPEC)
        spec["training"]["peers"] = peers
        path = self.data_dir.parent / f"spec-peers{peers}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def start(self, *args: str, pause_at: str | None = None) -> subprocess.Popen:
        env = dict(self.env)
        if pause_at:
            env["FLYWHEEL_TEST_PAUSE_AT"] = pause_at
        log = self.logs / f"{len(list(self.logs.iterdir())):02d}-{args[0]}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataflywheel.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        """Kill every command this machine started that still runs (a failed test's paused
        one), with its process group."""
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def run(self, *args: str, timeout: float = 600) -> tuple[int, str, str]:
        proc = self.start(*args)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode, out, self.last_log()

    def last_log(self) -> str:
        return sorted(self.logs.iterdir())[-1].read_text()

    def db_url(self) -> str:
        code, out, log = self.run("db", "url", "--show-password", timeout=120)
        assert code == 0, log
        return out.strip()

    def prefect_api(self) -> str:
        info = json.loads((self.data_dir / "prefect" / "server.json").read_text())
        return f"http://127.0.0.1:{info['port']}/api"

    def our_ray_processes(self) -> list[int]:
        """Live processes of any local Ray a command of this data directory started."""
        found = []
        for proc in ray_session.marked_processes():
            try:
                if proc.environ().get("FLYWHEEL_DATA_DIR") == str(self.data_dir):
                    found.append(proc.pid)
            except psutil.Error:  # gone meanwhile
                continue
        return found


@contextlib.contextmanager
def _user_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserMachine]:
    # Outside pytest's temp root: the embedded PostgreSQL runs as its own user (conftest).
    root = server_tmp("fw-user-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    env["FLYWHEEL_DATA_DIR"] = str(root / "data")
    logs = tmp_path_factory.mktemp("cli-logs")
    machine = UserMachine(data_dir=root / "data", env=env, logs=logs)
    try:
        yield machine
    finally:
        machine.kill_all()
        machine.run("down", timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserMachine]:
    with _user_machine(tmp_path_factory) as machine:
        yield machine


@pytest.fixture
def other_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserMachine]:
    """A second data directory on the same machine, as a second user's."""
    with _user_machine(tmp_path_factory) as machine:
        yield machine


class _Beside(threading.Thread):
    """Runs a chain in the background; :meth:`finish` waits and raises its error."""

    def __init__(self, chain: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.chain, self.error = chain, None

    def run(self) -> None:
        try:
            self.chain()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(timeout=1500)
        assert not self.is_alive(), "the one-model chain did not finish"
        if self.error is not None:
            raise self.error


def _digests(db_url: str, run_id: int) -> list[tuple]:
    """Per round: dataset digest, each peer's checkpoint digest and status, every sample."""
    return query(
        db_url,
        "SELECT r.index, r.status, d.digest, (SELECT string_agg(c.peer || ':' || c.digest || ':' "
        "|| c.status, ',' ORDER BY c.peer) FROM checkpoints c WHERE c.round_id = r.id), "
        "(SELECT string_agg(s.text, '|' ORDER BY p.content_hash, s.purpose, s.sample_index) "
        "FROM samples s JOIN prompts p ON p.id = s.prompt_id "
        "WHERE s.round_id = r.id), (SELECT count(*) FROM samples s WHERE s.round_id = r.id) "
        "FROM rounds r LEFT JOIN datasets d ON d.round_id = r.id WHERE r.run_id = :r "
        "ORDER BY r.index",
        r=run_id,
    )


def _execute(db_url: str, sql: str, **params: object) -> None:
    """One statement in a transaction of its own, committed."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text(sql), params).rowcount == 1
    finally:
        engine.dispose()


def _counts(db_url: str, run_id: int) -> dict[str, int]:
    return {name: query(db_url, sql, r=run_id)[0][0] for name, sql in TABLES.items()}


def _wait_paused(user: UserMachine, proc: subprocess.Popen, point: str) -> int:
    marker = user.data_dir / "test-pause" / point
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert proc.poll() is None, f"exited {proc.returncode} before {point}:\n{user.last_log()}"
        assert time.monotonic() < deadline, f"never reached {point}:\n{user.last_log()[-3000:]}"
        time.sleep(0.2)
    time.sleep(0.3)  # the marker is written first: let the pid land in it
    pid = int(marker.read_text())
    assert pid == proc.pid
    return pid


def _kill_at_each_point_then_resume(user: UserMachine, spec: Path, points: tuple[str, ...]):
    """Run ``spec`` killed at each of ``points`` in turn, one resume after each kill; returns
    (the recovered run's id, an uninterrupted run's id, the database URL)."""
    # An uninterrupted run of the same spec: the rows and digests a recovered run must equal.
    code, out, log = user.run("run", str(spec))
    assert code == 0, log[-4000:]
    reference = int(out.strip().splitlines()[-1])
    assert user.our_ray_processes() == [], "a finished `flywheel run` left Ray processes"
    db_url = user.db_url()

    shutil.rmtree(user.data_dir / "test-pause", ignore_errors=True)  # an earlier chain's marks
    proc = user.start("run", str(spec), pause_at=points[0])
    run_id: int | None = None
    for number, point in enumerate(points):
        pid = _wait_paused(user, proc, point)
        if run_id is None:
            (run_id,) = query(db_url, "SELECT max(id) FROM runs")[0]
            assert run_id != reference
        ray_record = json.loads((user.data_dir / "ray" / f"{pid}.json").read_text())
        prefect_record = json.loads(
            (user.data_dir / "prefect" / "owners" / f"{pid}.json").read_text()
        )
        assert prefect_owners.unfinished_flow_runs(user.prefect_api(), prefect_record["tag"])
        os.kill(pid, signal.SIGKILL)  # the CLI process alone: its Ray is left to its fate
        proc.wait()
        assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("running",)]

        # One resume recovers this kill; the next fault point (if any) stops it in turn.
        following = points[number + 1] if number + 1 < len(points) else None
        proc = user.start("resume", str(run_id), pause_at=following)
        if following is not None:
            _wait_paused(user, proc, following)
        else:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, user.last_log()[-4000:]
            assert out.strip().splitlines()[-1] == str(run_id)
        log = user.last_log()
        # It said what it found, and nothing of the killed process is left.
        assert f"recovered: flywheel process {pid}" in log or (
            f"recovered: stopped the local Ray left by flywheel process {pid}" in log
        ), log[-3000:]
        assert f"of killed flywheel process {pid} as Crashed" in log, log[-3000:]
        assert not ray_session._marked(ray_record["token"])
        assert not prefect_owners.unfinished_flow_runs(user.prefect_api(), prefect_record["tag"])
        assert not (user.data_dir / "ray" / f"{pid}.json").exists()

    assert run_id is not None
    assert user.our_ray_processes() == [], "the last resume left Ray processes"
    assert prefect_owners.unfinished_flow_runs(user.prefect_api()) == []
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    # Exactly the rows and digests of the uninterrupted run.
    assert _counts(db_url, run_id) == _counts(db_url, reference)
    assert _digests(db_url, run_id) == _digests(db_url, reference)
    return run_id, reference, db_url


def test_killed_at_every_stage_then_check_replay_diff_rescore_down(
    user: UserMachine, other_user: UserMachine, tmp_path: Path
) -> None:
    # The one-model chain runs beside the two-peer chain, in a data directory of its own (two
    # users' runs on one machine: neither's recovery may touch the other's processes or runs).
    one_model = _Beside(
        lambda: _kill_at_each_point_then_resume(
            other_user, other_user.spec_for(peers=1), POINTS_PEERS_1
        )
    )
    one_model.start()
    try:
        run_id, _, db_url = _kill_at_each_point_then_resume(
            user, user.spec_for(peers=2), KILL_POINTS
        )
    finally:
        one_model.finish()
    # Resuming the finished run changes nothing.
    before = _counts(db_url, run_id), _digests(db_url, run_id)
    code, out, log = user.run("resume", str(run_id))
    assert code == 0 and "already succeeded: nothing to resume" in log, log[-3000:]
    assert out.strip().splitlines()[-1] == str(run_id)
    assert (_counts(db_url, run_id), _digests(db_url, run_id)) == before

    # The rest of the user's recovery sequence, each step exiting 0 without a hang.
    code, out, log = user.run("check", str(run_id), timeout=300)
    assert code == 0 and "all invariants hold" in out, log[-3000:]
    started = time.monotonic()
    code, out, log = user.run("replay", str(run_id), "--round", "1")
    assert code == 0, log[-4000:]
    assert "the environment differs" not in log and "GCS" not in log, log[-3000:]
    replay_id = int(out.strip().splitlines()[-1])
    assert time.monotonic() - started < 300
    assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=replay_id) == [("succeeded",)]
    assert query(
        db_url,
        "SELECT r.id = (SELECT replay_of_round_id FROM runs WHERE id = :n) FROM rounds r "
        "WHERE r.run_id = :r AND r.index = 1",
        r=run_id,
        n=replay_id,
    ) == [(True,)]
    code, out, log = user.run("diff", f"{run_id}:1", f"{replay_id}:1", "--json", timeout=120)
    assert code == 0 and json.loads(out)["identical"], out + log
    code, out, _ = user.run("diff", f"{run_id}:1", f"{run_id}:2", timeout=120)
    assert code == 3 and "differs" in out
    code, _, log = user.run("check", str(replay_id), timeout=300)
    assert code == 0, log[-3000:]

    # Rescore through the CLI: every sample already has this verifier version, so nothing
    # is added; a changed configuration is a new version and scores every train sample.
    code, out, log = user.run("rescore", str(run_id), "--verifier", "exact_answer")
    assert code == 0, log[-3000:]
    train = query(
        db_url,
        "SELECT count(*) FROM samples s JOIN rounds r ON r.id = s.round_id "
        "WHERE r.run_id = :r AND s.purpose = 'train'",
        r=run_id,
    )[0][0]
    scores = _counts(db_url, run_id)["scores"]
    regex = tmp_path / "regex.yaml"
    regex.write_text("name: regex\npattern: '^[0-9]+$'\n")
    code, out, log = user.run("rescore", str(run_id), "--config", str(regex), "--purpose", "train")
    assert code == 0, log[-3000:]
    assert _counts(db_url, run_id)["scores"] == scores + train
    assert user.our_ray_processes() == []

    # A manifest naming other package versions: a loud warning, and --strict refuses.
    runs_before = query(db_url, "SELECT count(*) FROM runs")
    _execute(
        db_url,
        "UPDATE rounds SET manifest = jsonb_set(manifest, '{packages,torch}', '\"0.0.1\"') "
        "WHERE run_id = :r AND index = 2",
        r=run_id,
    )
    code, _, log = user.run("replay", str(run_id), "--round", "2", "--strict", timeout=300)
    flat = " ".join(log.split())
    assert code == 1 and "WARNING: the environment differs" in flat, flat
    assert "package torch: 0.0.1 ->" in flat
    assert "nothing was written" in flat
    # Inputs gone from the store: a clear error naming them, and no new run.
    (warmup_dataset,) = query(
        db_url,
        "SELECT d.object_key FROM datasets d JOIN rounds r ON r.id = d.round_id "
        "WHERE r.run_id = :r AND r.index = 0",
        r=run_id,
    )[0]
    (user.data_dir / "objects" / warmup_dataset).unlink()
    code, _, log = user.run("replay", str(run_id), "--round", "1", timeout=300)
    flat = " ".join(log.split())
    assert code == 1 and "inputs no longer in the object store" in flat, flat
    assert warmup_dataset in flat
    assert query(db_url, "SELECT count(*) FROM runs") == runs_before
    # The checker fails loudly on the damaged run: the missing object and a lost score.
    _execute(
        db_url,
        "DELETE FROM scores WHERE id = (SELECT x.id FROM scores x JOIN samples s ON "
        "s.id = x.sample_id JOIN rounds r ON r.id = s.round_id WHERE r.run_id = :r "
        "AND r.index = 2 AND s.purpose = 'train' AND x.verifier = 'exact_answer' LIMIT 1)",
        r=run_id,
    )
    code, out, log = user.run("check", str(run_id), timeout=300)
    assert code == 1 and "invariant(s) violated" in log, out + log
    assert "[object_missing]" in log and warmup_dataset in log and "[scores] round 2:" in log

    # The database is not stopped under its Prefect server; `down` stops everything.
    code, _, log = user.run("db", "stop", timeout=120)
    assert code == 1 and "flywheel down" in log, log
    api = user.prefect_api()
    assert healthy(api)
    code, out, log = user.run("down", timeout=120)
    assert code == 0, log
    assert "local Prefect server stopped" in out and "embedded PostgreSQL" in out, out
    assert not healthy(api)
    code, _, _ = user.run("db", "status", timeout=60)
    assert code == 3  # stopped
