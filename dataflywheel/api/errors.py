"""Every error the API returns is JSON: ``{"error": <code>, "message": <sentence>}`` (plus
``"details"``, a list of ``field: problem`` lines, on 422).

Runs in: the API process. Handlers turn our exceptions into that shape: an unknown id
(``LookupError``) is 404, an unreachable database or Prefect 503, a body or query that does
not validate 422 with one line per field; anything unexpected is a 500 with no internals.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dataflywheel.db.session import DatabaseUnavailable
from dataflywheel.spec import RunSpec, format_errors

log = logging.getLogger("dataflywheel.api")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with the status and the message the client should see."""

    def __init__(self, status: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


def error_body(status: int, message: str, details: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": CODES.get(status, "error"), "message": message}
    if details:
        body["details"] = details
    return body


def _response(status: int, message: str, details: list[str] | None = None, **kw: Any) -> Any:
    return JSONResponse(error_body(status, message, details), status_code=status, **kw)


def _field_lines(request: Request, exc: RequestValidationError) -> list[str]:
    """``field.path: problem`` per error; a run spec body gets the spec's own messages."""
    if request.method == "POST" and request.url.path.rstrip("/").endswith("/runs"):
        body = exc.body
        if isinstance(body, dict):
            try:
                RunSpec.model_validate(body)
            except ValidationError as spec_exc:
                return format_errors(spec_exc)
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        where = loc[0] if loc else ""
        path = ".".join(loc[1:]) if where in ("body", "query", "path", "header") else ".".join(loc)
        label = f"{where} {path}".strip() if where in ("query", "path", "header") else path
        lines.append(f"{label or 'body'}: {error.get('msg', 'invalid')}")
    return lines


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _response(exc.status, exc.message, exc.details, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return _response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        lines = _field_lines(request, exc)
        return _response(422, "invalid request: " + "; ".join(lines), lines)

    @app.exception_handler(LookupError)
    async def _not_found(request: Request, exc: LookupError) -> Any:
        return _response(404, str(exc).strip("'\""))

    @app.exception_handler(DatabaseUnavailable)
    async def _no_database(request: Request, exc: DatabaseUnavailable) -> Any:
        return _response(503, str(exc))

    @app.exception_handler(sa.exc.OperationalError)
    async def _db_down(request: Request, exc: sa.exc.OperationalError) -> Any:
        log.warning("database error on %s: %s", request.url.path, exc)
        return _response(503, "the database is unreachable; check FLYWHEEL_DATABASE_URL")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _response(500, f"internal error ({type(exc).__name__}); see the API's log")
