"""``/health`` (liveness: the process answers; no key needed) and ``/ready`` (the database is
reachable and at the schema revision this code needs).

Runs in: the API process.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from dataflywheel.api.deps import Authenticated
from dataflywheel.api.errors import ApiError
from dataflywheel.api.schemas import ErrorBody, Health, Ready
from dataflywheel.db import migrate
from dataflywheel.db.session import DatabaseUnavailable, check_connection

public = APIRouter(tags=["health"])
router = APIRouter(tags=["health"], dependencies=[Authenticated])


@public.get("/health", response_model=Health, summary="Liveness (no API key)")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Readiness: database reachable and migrated",
)
def ready(request: Request) -> Ready:
    engine = request.app.state.engine
    try:
        version = check_connection(engine)
        revision = migrate.current(engine)
    except DatabaseUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    head = migrate.head()
    if revision != head:
        raise ApiError(
            503, f"the database is at revision {revision or 'base'}, the API needs {head}: run "
            "`flywheel db upgrade`",
        )  # fmt: skip
    return Ready(status="ready", database=version, schema_revision=revision)
