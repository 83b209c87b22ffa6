"""``flywheel db …``: schema migrations and the embedded PostgreSQL.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

from typing import Annotated

import typer

from dataflywheel.cli.common import CommandError, err, friendly_errors, out, settings

app = typer.Typer(help="Schema migrations and the embedded PostgreSQL.", no_args_is_help=True)


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
