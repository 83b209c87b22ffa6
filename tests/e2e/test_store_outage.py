"""The object store goes away while a round trains: the stage fails with a clear error, no
row points at a missing object, and ``flywheel resume`` finishes the run once it is back.

The store is S3 over real HTTP (moto's server in a thread of this process; its objects live
in this process, so a server restarted on the same port serves them again). The run is a
real ``flywheel run`` subprocess; the server is stopped as soon as round 1's checkpoint row
exists (the training stage has begun and uploads only after training).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer
from sqlalchemy.orm import Session

from dataflywheel.config import Settings
from dataflywheel.db import invariants
from dataflywheel.db.session import make_engine
from dataflywheel.store import store_from_settings
from tests.invariant_support import query

pytestmark = pytest.mark.slow


def _flywheel(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dataflywheel.cli", *args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_store_outage_during_training_then_resume(
    flywheel_env: Settings, tiny_spec: dict, db_url: str, tmp_path: Path
) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = {
        "FLYWHEEL_STORE_URI": "s3://flywheel/objects",
        "FLYWHEEL_S3_ENDPOINT_URL": endpoint,
        "FLYWHEEL_S3_REGION": "us-east-1",
        "FLYWHEEL_S3_ACCESS_KEY_ID": "test",
        "FLYWHEEL_S3_SECRET_ACCESS_KEY": "test",
    }
    os.environ.update(s3)  # flywheel_env restores the environment afterwards
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="flywheel")
    tiny_spec["rounds"] = 1
    tiny_spec.pop("warmup")  # the outage hits round 1; a warm-up round adds nothing here
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec))
    env = dict(os.environ)
    try:
        log = tmp_path / "run.log"
        proc = _flywheel(["run", str(spec_file)], env, log)
        training = (
            "SELECT count(*) FROM checkpoints c JOIN rounds r ON r.id = c.round_id "
            "WHERE r.index = 1"
        )
        deadline = time.monotonic() + 300
        while not query(db_url, training)[0][0]:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "round 1 never started training"
            time.sleep(0.1)
        server.stop()
        assert proc.wait(timeout=300) != 0
        output = " ".join(log.read_text().split())
        assert f"cannot reach S3 at {endpoint}" in output
        (run_id,) = query(db_url, "SELECT id FROM runs")[0]
        assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("failed",)]
        # No row names an object the store does not hold: every checkpoint without its
        # upload has no key, and the round did not finish.
        assert query(
            db_url,
            "SELECT count(*) FROM rounds WHERE run_id = :r AND index = 1 AND status = 'succeeded'",
            r=run_id,
        ) == [(0,)]

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        engine = make_engine(db_url)
        try:
            with Session(engine) as session:
                missing = invariants.check_objects(session, run_id, store_from_settings(Settings()))
            assert [str(v) for v in missing] == []
            resumed = _flywheel(["resume", str(run_id)], env, tmp_path / "resume.log")
            assert resumed.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
            with Session(engine) as session:
                found = invariants.check_run(session, run_id)
                found += invariants.check_objects(session, run_id, store_from_settings(Settings()))
            assert [str(v) for v in found] == []
        finally:
            engine.dispose()
        assert query(db_url, "SELECT status FROM runs WHERE id = :r", r=run_id) == [("succeeded",)]
    finally:
        server.stop()
