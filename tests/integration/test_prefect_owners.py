"""Flow runs a killed command left ``Running`` are marked ``Crashed`` by the next command
(``dataflywheel/prefect_owners.py``), against the session's real Prefect server; a live
owner's runs and other runs are left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from uuid import UUID

import psutil
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Running

from dataflywheel import prefect_owners
from dataflywheel.config import Settings


def _running_flow_run(client: SyncPrefectClient, tags: list[str]) -> UUID:
    """A flow run in state Running with ``tags``, as a command leaves it when killed."""
    from prefect import flow

    @flow(name="owner-test")
    def owner_test() -> None:
        return None

    created = client.create_flow_run(flow=owner_test, tags=tags)
    client.set_flow_run_state(created.id, Running(), force=True)
    return created.id


def test_crash_orphans_marks_a_dead_owners_runs_only(prefect_api: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = prefect_owners.owners_dir(settings)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir(parents=True)
    (folder / f"{dead.pid}.json").write_text(
        f'{{"pid": {dead.pid}, "started": 1.0, "tag": "flywheel-owner-dead", '
        f'"api_url": "{prefect_api}"}}'
    )
    live = prefect_owners.register(settings, prefect_api)
    assert live.pid == psutil.Process().pid
    with SyncPrefectClient(prefect_api) as client:
        orphan = _running_flow_run(client, ["flywheel-owner-dead"])
        mine = _running_flow_run(client, [live.tag])
        other = _running_flow_run(client, ["someone-else"])
        found = prefect_owners.crash_orphans(settings)
        assert [(f.pid, f.flow_runs) for f in found] == [(dead.pid, 1)]
        assert "as Crashed in Prefect" in str(found[0])
        states = {i: client.read_flow_run(i).state for i in (orphan, mine, other)}
    assert states[orphan].name == "Crashed" and str(dead.pid) in states[orphan].message
    assert states[mine].name == "Running" and states[other].name == "Running"
    assert not (folder / f"{dead.pid}.json").exists() and live.record.exists()
    assert prefect_owners.live_owners(settings) == [live.pid]
    assert prefect_owners.unfinished_flow_runs(prefect_api, "flywheel-owner-dead") == []
    assert prefect_owners.unfinished_flow_runs(prefect_api, live.tag) != []
    prefect_owners.release(live)
    assert not live.record.exists()


def test_a_dead_owner_whose_server_is_down_is_kept_for_later(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = prefect_owners.owners_dir(settings)
    folder.mkdir(parents=True)
    record = folder / "1234567.json"
    record.write_text(
        '{"pid": 1234567, "started": 1.0, "tag": "t", "api_url": "http://127.0.0.1:9/api"}'
    )
    assert prefect_owners.crash_orphans(settings) == []
    assert record.exists()
