"""What every ``flywheel`` command shares: the two consoles, turning our errors into one line
and exit status 1, and the schema check.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dataflywheel.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Wide enough for the per-round table when output goes to a file or a pipe (rich would
# otherwise wrap it at 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

P = ParamSpec("P")
R = TypeVar("R")


class CommandError(RuntimeError):
    """A refusal of a command; the message says what to do. Printed as one line, exit 1."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from dataflywheel.db.embedded import EmbeddedPostgresError
    from dataflywheel.db.session import DatabaseUnavailable
    from dataflywheel.prefect_server import PrefectServerError
    from dataflywheel.spec import SpecError
    from dataflywheel.store import StoreError
    from workers.driver.ray_session import RayUnavailable

    return (
        CommandError,
        DatabaseUnavailable,
        EmbeddedPostgresError,
        StoreError,
        ValidationError,
        SpecError,
        PrefectServerError,
        RayUnavailable,
        LookupError,
    )


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print our errors as one message and exit 1 instead of showing a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _expected_errors() as exc:
            raise fail(str(exc)) from None

    return wrapper


def settings() -> Settings:
    return Settings()


def read(settings: Settings, query: Callable[[Session], R]) -> R:
    """Run ``query(session)`` in one short unit of work on an engine of its own."""
    from dataflywheel.db.session import engine_from_settings, session_scope

    engine = engine_from_settings(settings)
    try:
        with session_scope(engine) as session:
            return query(session)
    finally:
        engine.dispose()


def ready_database(settings: Settings, *, migrate_embedded: bool = False) -> None:
    """Refuse a database whose schema is not the one this code needs. With
    ``migrate_embedded``, the embedded database is brought to the newest schema instead (an
    external one must be migrated on purpose: `flywheel db upgrade`)."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import DatabaseUnavailable, engine_from_settings

    engine = engine_from_settings(settings)
    try:
        current, head = migrate.current(engine), migrate.head()
        if current == head:
            return
        if migrate_embedded and not settings.database_url:
            migrate.upgrade(engine)
            err.print(f"embedded database migrated to {head}")
            return
        where = "the database at FLYWHEEL_DATABASE_URL" if settings.database_url else "the database"
        raise DatabaseUnavailable(
            f"{where} is at revision {current or 'base'}, the code needs {head}: "
            "run `flywheel db upgrade`"
        )
    finally:
        engine.dispose()
