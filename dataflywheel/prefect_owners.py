"""The Prefect flow runs a ``flywheel`` process owns, and the ones a killed process left.

Runs in: the CLI process. A process that runs flows tags them (and their subflows and
tasks) ``flywheel-owner-<pid>-<token>`` and records the tag and the Prefect API URL in
``<data dir>/prefect/owners/<pid>.json``. A process that ends normally, on error or on
Ctrl-C leaves final states itself (Prefect's engine marks an interrupted run ``Crashed``) and
removes its record. One killed with SIGKILL leaves its runs ``Running`` forever, so the next
command calls :func:`crash_orphans`: for every record whose process is gone, the runs and task
runs still ``Running`` or ``Pending`` under its tag are set ``Crashed``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from dataflywheel import process_records
from dataflywheel.config import Settings

UNFINISHED = ("RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING")


@dataclass(frozen=True)
class Owner:
    pid: int
    tag: str
    record: Path


@dataclass(frozen=True)
class Orphans:
    """What :func:`crash_orphans` did for one dead owner."""

    pid: int
    flow_runs: int
    task_runs: int

    def __str__(self) -> str:
        return (
            f"marked {self.flow_runs} flow run(s) and {self.task_runs} task run(s) of killed "
            f"flywheel process {self.pid} as Crashed in Prefect"
        )


def owners_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "prefect" / "owners"


def register(settings: Settings, api_url: str) -> Owner:
    """Record this process as the owner of the flow runs it tags with the returned tag."""
    pid = os.getpid()
    tag = f"flywheel-owner-{pid}-{uuid.uuid4().hex[:8]}"
    record = process_records.write(owners_dir(settings), tag=tag, api_url=api_url)
    return Owner(pid=pid, tag=tag, record=record)


def release(owner: Owner) -> None:
    owner.record.unlink(missing_ok=True)


def crash_orphans(settings: Settings) -> list[Orphans]:
    """Set ``Crashed`` the unfinished flow and task runs of owners that no longer run; a
    record whose Prefect API does not answer now is kept for a later command."""
    from dataflywheel.prefect_server import healthy

    done: list[Orphans] = []
    for record in process_records.read(owners_dir(settings)):
        tag, api_url = record.doc.get("tag"), record.doc.get("api_url")
        if record.alive:
            continue
        if not tag or not api_url:
            record.remove()
            continue
        if not healthy(api_url):
            continue  # its server is down: its runs are marked once it answers again
        flows, tasks = _crash_tagged(api_url, tag, record.pid)
        done.append(Orphans(pid=record.pid, flow_runs=flows, task_runs=tasks))
        record.remove()
    return done


def live_owners(settings: Settings) -> list[int]:
    """Pids of running processes that run flows on this data directory."""
    return [r.pid for r in process_records.read(owners_dir(settings)) if r.alive]


def unfinished_flow_runs(api_url: str, tag: str | None = None) -> list[str]:
    """Names of the flow runs that are not in a final state (all, or those with ``tag``)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas import filters

    state = filters.FlowRunFilterState(type=filters.FlowRunFilterStateType(any_=list(UNFINISHED)))
    tags = filters.FlowRunFilterTags(all_=[tag]) if tag else None
    with SyncPrefectClient(api_url) as client:
        runs = client.read_flow_runs(flow_run_filter=filters.FlowRunFilter(state=state, tags=tags))
    return [f"{r.name} ({r.state_name})" for r in runs]


def _crash_tagged(api_url: str, tag: str, pid: int) -> tuple[int, int]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas import filters
    from prefect.states import Crashed

    message = f"the flywheel process {pid} running this was killed (found by process {os.getpid()})"
    state = filters.FlowRunFilterState(type=filters.FlowRunFilterStateType(any_=list(UNFINISHED)))
    task_state = filters.TaskRunFilterState(  # `name` has no default in this model
        type=filters.TaskRunFilterStateType(any_=list(UNFINISHED)), name=None
    )
    with SyncPrefectClient(api_url) as client:
        runs = client.read_flow_runs(
            flow_run_filter=filters.FlowRunFilter(
                state=state, tags=filters.FlowRunFilterTags(all_=[tag])
            )
        )
        task_runs = client.read_task_runs(
            task_run_filter=filters.TaskRunFilter(
                state=task_state, tags=filters.TaskRunFilterTags(all_=[tag])
            )
        )
        for task_run in task_runs:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return len(runs), len(task_runs)
