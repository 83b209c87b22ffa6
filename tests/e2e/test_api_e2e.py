"""The control plane end to end, every piece a real local process: the Prefect server (the
session's), a Ray head, a Prefect process worker on the deployment's work pool, and the API
under uvicorn (`flywheel api`). POST a tiny spec → a flow run appears in Prefect → the worker
runs it to completion → GET the run shows its rounds and metrics → the lineage endpoint returns
the checkpoint's samples → the same rows are in Postgres. Then the bad inputs: an invalid spec
is a 422 naming the field, and with Prefect down a POST is a 503 that records nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from api_support import closed_port_url, make_app, new_key
from fastapi.testclient import TestClient

from dataflywheel.config import Settings
from dataflywheel.db.session import make_engine, session_scope
from dataflywheel.deploy import DeployOptions, deploy
from dataflywheel.lineage_view import checkpoint_lineage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POOL = "flywheel-e2e"
DEPLOYMENT = "e2e"
RUN_TIMEOUT_S = 540


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """End a process group this test started (SIGTERM, then SIGKILL)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            _stop(process)


def _wait_for(what: str, check, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(1.0)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    pytest.fail(f"{what} within {timeout:.0f} s\n{tails}")


def test_post_a_spec_and_follow_it_through_prefect_ray_and_the_api(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, prefect_api: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    deployment = deploy(DeployOptions(name=DEPLOYMENT, work_pool=POOL), prefect_api).deployment
    engine = make_engine(db_url)
    token = new_key(engine, "e2e")
    ray_port, api_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "FLYWHEEL_RAY_ADDRESS": f"127.0.0.1:{ray_port}",
        "FLYWHEEL_PREFECT_API_URL": prefect_api,
        "FLYWHEEL_API_DEPLOYMENT": deployment,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Explicit: with a token in ~/.ray (a local ray.init writes one), `ray start` would turn
        # token auth on and the flow's driver, started without it, could not connect.
        "RAY_AUTH_MODE": "disabled",
    }
    logs = [tmp_path / n for n in ("ray.log", "worker.log", "api.log")]
    # A short temp dir: Ray's Unix socket paths must stay under ~107 characters.
    ray_tmp = tempfile.mkdtemp(prefix="fwray-", dir="/tmp")
    cleanup_ray_tmp = functools.partial(shutil.rmtree, ray_tmp, ignore_errors=True)
    ray_head = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                f"--port={ray_port}", "--num-cpus=2", "--include-dashboard=false",
                f"--temp-dir={ray_tmp}"]  # fmt: skip
    worker = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
              "--type", "process"]  # fmt: skip
    api = [sys.executable, "-m", "dataflywheel.cli", "api", "--port", str(api_port)]
    base = f"http://127.0.0.1:{api_port}"
    headers = {"Authorization": f"Bearer {token}"}
    with (
        contextlib.ExitStack() as cleanup,
        _process(ray_head, env, logs[0]),
        _process(worker, env, logs[1]),
        _process(api, env, logs[2]),
        httpx.Client(base_url=base, headers=headers, timeout=30) as http,
        SyncPrefectClient(prefect_api) as prefect,
    ):
        cleanup.callback(cleanup_ray_tmp)  # after the head has stopped
        _wait_for("the API to answer /health", lambda: http.get("/health").is_success, 90, logs)
        _wait_for(
            "the Ray head to listen",
            lambda: socket.create_connection(("127.0.0.1", ray_port), timeout=1).close() is None,
            90,
            logs,
        )

        # An invalid spec is refused with the field named, before anything is recorded.
        bad = http.post("/runs", json={**tiny_spec, "rounds": 0})
        assert bad.status_code == 422, bad.text
        assert any(line.startswith("rounds:") for line in bad.json()["details"]), bad.json()

        created = http.post("/runs", json=tiny_spec)
        assert created.status_code == 201, created.text
        run_id, flow_run_id = created.json()["run_id"], created.json()["prefect_flow_run_id"]

        # The flow run exists in Prefect, for our deployment, carrying our run id.
        flow_run = prefect.read_flow_run(flow_run_id)
        assert flow_run.parameters["run_id"] == run_id
        assert flow_run.deployment_id == prefect.read_deployment_by_name(deployment).id

        def finished() -> bool:
            state = prefect.read_flow_run(flow_run_id).state
            return state is not None and state.is_final()

        _wait_for("the flow run to finish", finished, RUN_TIMEOUT_S, logs)
        state = prefect.read_flow_run(flow_run_id).state
        assert state is not None and state.is_completed(), f"{state}\n{logs[1].read_text()[-4000:]}"

        doc = http.get(f"/runs/{run_id}").json()
        assert doc["run"]["status"] == "succeeded"
        assert doc["run"]["prefect_flow_run_id"] == flow_run_id
        rounds = doc["report"]["rounds"]
        assert [r["index"] for r in rounds] == [0, 1, 2]
        assert all(r["status"] == "succeeded" and r["eval"] is not None for r in rounds)
        assert [r["samples"] for r in rounds] == [0, 36, 36]
        assert http.get(f"/runs/{run_id}/rounds").json()["rounds"] == rounds

        # The last round's checkpoint: its lineage names the samples it was trained on.
        checkpoint_id = rounds[-1]["training"]["checkpoint_id"]
        lineage = http.get(f"/checkpoints/{checkpoint_id}/lineage").json()
        assert lineage["chain"][0]["id"] == checkpoint_id
        from_rounds = {(s["round_index"], s["samples"]) for s in lineage["samples_by_round"]}
        assert from_rounds and all(n > 0 for _, n in from_rounds)

        samples = http.get("/samples", params={"run_id": run_id, "limit": 500}).json()
        download = http.get(f"/checkpoints/{checkpoint_id}/download").json()
        weights = [f for f in download["files"] if f["path"] != "MANIFEST.json"]
        assert weights and http.get(weights[0]["url"]).status_code == 200

    # The same rows in Postgres.
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, prefect_flow_run_id FROM runs WHERE id = :r"), {"r": run_id}
        ).one()
        assert tuple(row) == ("succeeded", flow_run_id)
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 1
        total = conn.execute(
            sa.text(
                "SELECT count(*) FROM samples s JOIN rounds r ON r.id = s.round_id "
                "WHERE r.run_id = :r"
            ),
            {"r": run_id},
        ).scalar_one()
    assert len(samples["items"]) == total
    with session_scope(engine) as session:
        assert lineage == checkpoint_lineage(session, checkpoint_id)

    # Prefect down: 503 with a clear message, and no run row left behind.
    down = make_app(db_url, tmp_path / "down", prefect_api_url=closed_port_url())
    with TestClient(down, headers=headers) as client:
        refused = client.post("/runs", json=tiny_spec)
    assert refused.status_code == 503 and "unreachable" in refused.json()["message"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 1
    engine.dispose()
