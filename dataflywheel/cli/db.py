"""``flywheel db …``: schema migrations, the embedded PostgreSQL, read-only roles for analysts.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from dataflywheel.cli.common import CommandError, err, friendly_errors, out, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

R = TypeVar("R")

app = typer.Typer(
    help="Schema migrations, the embedded PostgreSQL, read-only roles for analysts.",
    no_args_is_help=True,
)


@app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import engine_from_settings

    engine = engine_from_settings(settings())
    try:
        migrate.upgrade(engine, revision)
        out.print(f"database at revision {migrate.current(engine)}")
    finally:
        engine.dispose()


@app.command("downgrade")
@friendly_errors
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, '-1' or 'base'.")] = "-1",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Migrate the database down to REVISION. Dropping tables deletes their rows."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import engine_from_settings

    if not yes and not typer.confirm(
        f"Downgrade to {revision}? Tables the downgrade drops lose their rows.", default=False
    ):
        err.print("aborted; nothing changed")
        raise typer.Exit(1)
    engine = engine_from_settings(settings())
    try:
        migrate.downgrade(engine, revision)
        out.print(f"database at revision {migrate.current(engine) or 'base (empty)'}")
    finally:
        engine.dispose()


@app.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision and the newest one available."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import engine_from_settings

    engine = engine_from_settings(settings())
    try:
        current, head = migrate.current(engine), migrate.head()
    finally:
        engine.dispose()
    state = "up to date" if current == head else "run `flywheel db upgrade`"
    out.print(f"current: {current or 'base (empty)'}  head: {head}  ({state})")


@app.command("url")
@friendly_errors
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password too.")] = False,
) -> None:
    """Print the database URL (starting the embedded server if that is the one in use)."""
    from dataflywheel.db.session import redact, resolve_database_url

    url = resolve_database_url(settings())
    print(url if show_password else redact(url))


@app.command("start")
@friendly_errors
def db_start() -> None:
    """Start the embedded PostgreSQL (a no-op if it is running or a URL is configured)."""
    from dataflywheel.db import embedded

    settings_ = settings()
    if settings_.database_url:
        out.print("FLYWHEEL_DATABASE_URL is set; the embedded server is not used")
        return
    server = embedded.start(settings_.embedded_pgdata)
    out.print(f"embedded PostgreSQL running (pid {server.pid}) in {server.pgdata}")


@app.command("stop")
@friendly_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL cleanly (a fast shutdown: sessions end, data is kept);
    refused while the local Prefect server or a flywheel command still uses it."""
    from dataflywheel.cli.local_services import users_of_database
    from dataflywheel.db import embedded

    settings_ = settings()
    users = users_of_database(settings_)
    if users:
        raise CommandError(
            f"the embedded PostgreSQL in {settings_.embedded_pgdata} is in use by "
            f"{'; '.join(users)}: stop them first, or run `flywheel down` to stop everything "
            "this data directory started"
        )
    pgdata = settings_.embedded_pgdata
    if embedded.stop(pgdata):
        out.print(f"embedded PostgreSQL in {pgdata} stopped")
    else:
        out.print(f"no embedded PostgreSQL running in {pgdata}")


@app.command("status")
@friendly_errors
def db_status() -> None:
    """Say whether the embedded PostgreSQL is running."""
    from dataflywheel.db import embedded

    settings_ = settings()
    if settings_.database_url:
        out.print("using FLYWHEEL_DATABASE_URL (embedded server not used)")
        return
    server = embedded.running(settings_.embedded_pgdata)
    if server is None:
        out.print(f"embedded PostgreSQL in {settings_.embedded_pgdata}: stopped")
        raise typer.Exit(3)
    out.print(f"embedded PostgreSQL in {server.pgdata}: running (pid {server.pid})")


def _as_admin(work: Callable[[Session], R], *, needs_schema: bool) -> tuple[str, R]:
    """Run ``work`` in one transaction on the configured database; return the database URL
    and what ``work`` returned. Refusals and missing privileges become one-line errors."""
    import psycopg
    import sqlalchemy as sa

    from dataflywheel.db import migrate, readers
    from dataflywheel.db.session import engine_from_settings, session_scope

    engine = engine_from_settings(settings())
    try:
        if needs_schema and migrate.current(engine) is None:
            raise CommandError("the database has no schema yet: run `flywheel db upgrade` first")
        with session_scope(engine) as session:
            result = work(session)
        return engine.url.render_as_string(hide_password=False), result
    except readers.ReaderError as exc:
        raise CommandError(str(exc)) from None
    except (psycopg.errors.InsufficientPrivilege, sa.exc.ProgrammingError) as exc:
        # Raised by psycopg directly (the role statements) or wrapped by SQLAlchemy.
        cause = exc.orig if isinstance(exc, sa.exc.ProgrammingError) else exc
        if not isinstance(cause, psycopg.errors.InsufficientPrivilege):
            raise
        raise CommandError(
            f"{cause.diag.message_primary}: the configured database user must be able to "
            "create roles (superuser, or CREATEROLE) and own the flywheel tables; set "
            "FLYWHEEL_DATABASE_URL to such a user for this command"
        ) from None
    finally:
        engine.dispose()


@app.command("grant-reader")
@friendly_errors
def db_grant_reader(
    name: Annotated[str, typer.Argument(help="The analyst's role name (lowercase).")],
    password: Annotated[
        str | None,
        typer.Option(help="Set this password (an existing one is kept when omitted)."),
    ] = None,
    show_password: Annotated[
        bool, typer.Option(help="Put the password in the printed URL.")
    ] = False,
) -> None:
    """Create or update NAME, a role that can only read the lineage tables, and print its
    connection URL. Needs a database user that may create roles and owns the tables."""
    from dataflywheel.db import readers

    url, created = _as_admin(
        lambda session: readers.grant_reader(session, name, password), needs_schema=True
    )
    err.print(
        f"{'created' if created else 'updated'} read-only role {name} (member of "
        f"{readers.READERS_GROUP}); it reads {', '.join(readers.READABLE)}",
        highlight=False,
        soft_wrap=True,
    )
    if not settings().database_url:
        err.print(
            "embedded PostgreSQL: reachable only on this machine, through its Unix socket (no "
            "TCP port), and it trusts every connection made there: no password is checked "
            "(docs/lineage.md, read-only access)",
            highlight=False,
            soft_wrap=True,
        )
    print(readers.reader_url(url, name, password if show_password else None))


@app.command("revoke-reader")
@friendly_errors
def db_revoke_reader(
    name: Annotated[str, typer.Argument(help="The reader role to drop.")],
) -> None:
    """Drop NAME, a read-only role made by grant-reader (roles are server-wide: this removes
    it from every database on the server)."""
    from dataflywheel.db import readers

    _, dropped = _as_admin(lambda session: readers.revoke_reader(session, name), needs_schema=False)
    out.print(f"dropped role {name}" if dropped else f"no role {name}; nothing to revoke")
