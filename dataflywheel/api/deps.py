"""Per-request dependencies: the database session (the request is the unit of work) and the
bearer-key check every endpoint but ``/health`` declares.

Runs in: the API process. Keys are looked up by the sha256 of the presented token
(``db/api_queries.py``); a missing, unknown or revoked key is a 401 with a JSON message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dataflywheel.api.errors import ApiError
from dataflywheel.db import api_queries
from dataflywheel.db.session import session_scope

_bearer = HTTPBearer(auto_error=False, description="An API key from `flywheel api-key create`.")


def _session(request: Request) -> Iterator[Session]:
    # scope="function" below: the commit happens when the handler returns, before the
    # response is sent, so a client never sees a success that was not committed.
    with session_scope(request.app.state.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(_session, scope="function")]


def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    """The id of the API key presented as ``Authorization: Bearer <token>``."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>' (`flywheel api-key create`)"
        )
    with session_scope(request.app.state.engine) as session:
        key = api_queries.authenticate(session, credentials.credentials)
        if key is None:
            raise ApiError(401, "invalid or revoked API key")
        return key.id


Authenticated = Depends(require_key)
