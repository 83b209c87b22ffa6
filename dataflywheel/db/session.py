"""Engines and sessions: the one place in the code base that commits.

Runs in: anywhere that touches the database (CLI, Prefect tasks, API handlers, Ray workers
that persist results). Query functions elsewhere take a ``Session`` and never commit; the
caller opens a :func:`session_scope` and that scope is the unit of work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from dataflywheel.config import Settings
from dataflywheel.db import embedded


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be reached; the message names the setting to fix."""


def normalize_url(url: str) -> str:
    """Force the psycopg 3 driver: ``postgres://`` and ``postgresql://`` both become
    ``postgresql+psycopg://`` so users can paste a libpq URL."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUnavailable(
            f"FLYWHEEL_DATABASE_URL={redact(url)} is not a PostgreSQL URL; "
            "use postgresql+psycopg://user:pass@host:5432/db"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        parts = urlsplit(url)
        return f"{parts.scheme}://***"


def resolve_database_url(settings: Settings) -> str:
    """The configured server's URL, or the embedded server's (started if needed)."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    return embedded.start(settings.embedded_pgdata).url


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine for ``url``; pools pre-ping so a restarted server is reconnected to."""
    options: dict[str, object] = {"pool_pre_ping": True, "future": True}
    options.update(kwargs)
    return sa.create_engine(normalize_url(url), **options)


def check_connection(engine: Engine, setting: str = "FLYWHEEL_DATABASE_URL") -> str:
    """Connect once and return the server version; raise :class:`DatabaseUnavailable` with
    a message that names ``setting`` and the URL (password hidden) if that fails."""
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot connect to the database at {redact(str(engine.url.render_as_string(False)))}"
            f": {reason}. Check {setting} (host, port, user, password, database name) and that "
            "the server is running, or unset it to use the embedded PostgreSQL."
        ) from exc


def wait_for_database(engine: Engine, timeout_s: float) -> None:
    """Return once ``engine`` can connect; while the server is restarting (connection
    refused, socket gone) retry with backoff for up to ``timeout_s`` seconds, then raise
    :class:`DatabaseUnavailable`. Pools pre-ping, so the connection this opens (and the
    session that follows) is a fresh one when the old ones died with the server."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            with engine.connect():
                return
        except sa.exc.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise DatabaseUnavailable(
                    f"the database at {redact(engine.url.render_as_string(False))} did not "
                    f"answer for {timeout_s:g} s: {reason}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def engine_from_settings(settings: Settings, **kwargs: object) -> Engine:
    """Resolve, connect and verify: the engine every entry point starts from."""
    engine = make_engine(resolve_database_url(settings), **kwargs)
    check_connection(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on any exception."""
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
