"""``/runs``: create a run from a spec (as a Prefect deployment run), list, read, cancel.

Runs in: the API process. Creating a run is one unit of work: our ``runs`` row is inserted,
the Prefect flow run is created with that row's id as its ``run_id`` parameter, and only then
does the transaction commit, so a Prefect failure leaves no orphan row (the rollback removes
it). The commit happens milliseconds after Prefect accepts, long before a worker can start the
flow process that reads the row. If the commit itself fails, the flow run is deleted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Header, Path, Query, Request

from dataflywheel.api import prefect_runs
from dataflywheel.api.deps import Authenticated, DbSession
from dataflywheel.api.errors import ApiError
from dataflywheel.api.schemas import (
    Cancelled,
    CreatedRun,
    ErrorBody,
    RoundsPage,
    RunDetail,
    RunsPage,
    RunSummary,
)
from dataflywheel.db import api_queries, queries
from dataflywheel.db.models import RUN_STATUSES, Run
from dataflywheel.db.session import session_scope
from dataflywheel.gpu.memory_plan import plan_for_spec
from dataflywheel.reporting import report_json, run_report
from dataflywheel.spec import RunSpec, spec_hash

router = APIRouter(tags=["runs"], dependencies=[Authenticated])
RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Our run id.")]
TERMINAL = ("succeeded", "failed", "cancelled")
E = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


def _summary(run: Run) -> RunSummary:
    return RunSummary(
        id=run.id,
        name=run.name,
        status=run.status,
        spec_hash=run.spec_hash,
        prefect_flow_run_id=run.prefect_flow_run_id,
        error=run.error,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


@router.post(
    "/runs",
    status_code=201,
    response_model=CreatedRun,
    responses={**E, 200: {"model": CreatedRun}, 503: {"model": ErrorBody}},
    summary="Start a run from a spec",
)
def create_run(
    spec: RunSpec,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Retrying with the same key returns the first run instead of a twin.",
        ),
    ] = None,
) -> Any:
    """Validate the spec, start it as a run of the `flywheel_run` deployment and return our
    run id with the Prefect flow run id. 422 (and nothing recorded) when its GPU workers
    cannot fit (`flywheel plan`); 503 (and nothing recorded) when Prefect is down."""
    memory = plan_for_spec(spec)
    if memory.refused:
        refusals = list(memory.refusals)
        raise ApiError(422, "the memory plan refuses this spec: " + "; ".join(refusals), refusals)
    state = request.app.state
    deployment = state.config.deployment
    if idempotency_key:
        with session_scope(state.engine) as session:
            existing = api_queries.run_by_idempotency_key(session, idempotency_key)
            if existing is not None and existing.prefect_flow_run_id:
                from fastapi.responses import JSONResponse

                body = CreatedRun(
                    run_id=existing.id,
                    prefect_flow_run_id=existing.prefect_flow_run_id,
                    status=existing.status,
                    deployment=deployment,
                )
                return JSONResponse(body.model_dump(), status_code=200)
    flow_run_id: str | None = None
    try:
        with session_scope(state.engine) as session:
            run_id = queries.create_run(
                session,
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                spec_hash=spec_hash(spec),
                idempotency_key=idempotency_key,
            )
            flow_run_id = prefect_runs.start_run(
                state.prefect_api_url,
                deployment,
                {"spec": spec.model_dump(mode="json"), "run_id": run_id},
                name=f"{spec.name}-run-{run_id}",
                timeout=state.config.prefect_timeout_s,
            )
            session.execute(
                sa.update(Run).where(Run.id == run_id).values(prefect_flow_run_id=flow_run_id)
            )
    except prefect_runs.PrefectUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    except Exception:
        if flow_run_id is not None and state.prefect_api_url:
            prefect_runs.delete_run(state.prefect_api_url, flow_run_id, 5.0)
        raise
    return CreatedRun(
        run_id=run_id, prefect_flow_run_id=flow_run_id, status="pending", deployment=deployment
    )


@router.get("/runs", response_model=RunsPage, responses=E, summary="List runs, newest first")
def list_runs(
    request: Request,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    status: Annotated[Literal[RUN_STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
) -> RunsPage:
    runs = api_queries.list_runs_page(session, limit=limit, offset=offset, status=status)
    return RunsPage(items=[_summary(r) for r in runs], limit=limit, offset=offset)


@router.get("/runs/{run_id}", response_model=RunDetail, responses=E, summary="A run and its report")
def get_run(run_id: RunId, session: DbSession) -> RunDetail:
    """The run's row, its spec and its report (rounds with their metrics, as
    `flywheel report --json` prints it)."""
    run = queries.get_run(session, run_id)
    return RunDetail(
        run=_summary(run), spec=run.spec, report=report_json(run_report(session, run_id))
    )


@router.get(
    "/runs/{run_id}/rounds", response_model=RoundsPage, responses=E, summary="A run's rounds"
)
def list_rounds(run_id: RunId, session: DbSession) -> RoundsPage:
    doc = report_json(run_report(session, run_id))
    return RoundsPage(
        run_id=run_id, primary_metric=doc["run"]["primary_metric"], rounds=doc["rounds"]
    )


@router.get("/runs/{run_id}/rounds/{index}", responses=E, summary="One round of a run")
def get_round(
    run_id: RunId,
    index: Annotated[int, Path(ge=0, le=2**31 - 1, description="Round index (0: warm-up).")],
    session: DbSession,
) -> dict[str, Any]:
    doc = report_json(run_report(session, run_id))
    for entry in doc["rounds"]:
        if entry["index"] == index:
            return entry
    raise ApiError(404, f"run {run_id} has no round {index} (it has {len(doc['rounds'])})")


@router.post(
    "/runs/{run_id}/cancel",
    response_model=Cancelled,
    responses={**E, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Cancel a run",
)
def cancel_run(run_id: RunId, request: Request, session: DbSession) -> Cancelled:
    """Cancel the run's Prefect flow run and mark the run cancelled. 409 when it has already
    finished or was not started through Prefect (a `flywheel run` process: stop that)."""
    state = request.app.state
    run = queries.get_run(session, run_id)
    if run.status in TERMINAL:
        raise ApiError(409, f"run {run_id} has already finished ({run.status})")
    if not run.prefect_flow_run_id:
        raise ApiError(
            409,
            f"run {run_id} was not started through the API (no Prefect flow run recorded); "
            "stop the `flywheel run` process that runs it",
        )
    try:
        prefect_state = prefect_runs.cancel_run(
            state.prefect_api_url, run.prefect_flow_run_id, timeout=state.config.prefect_timeout_s
        )
    except prefect_runs.PrefectUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    if prefect_state in ("COMPLETED", "FAILED", "CRASHED"):
        raise ApiError(409, f"run {run_id}'s flow run has already finished ({prefect_state})")
    queries.set_run_status(session, run_id, "cancelled", "cancelled through the API")
    return Cancelled(run_id=run_id, status="cancelled", prefect_state=prefect_state)
