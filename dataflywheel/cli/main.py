"""The ``flywheel`` command: runs, reports, database, object store and environment checks.

Runs in: the user's shell (the CLI process). ``run`` and ``resume`` import ``flows`` inside
the command: the CLI is the one edge where the core hands over to the orchestration layer.
Every command resolves its settings from the environment (``FLYWHEEL_*``), turns our own
error types into one readable message with a non-zero exit status, and never prints a stack
trace for a configuration mistake.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataflywheel import __version__
from dataflywheel.config import Settings

app = typer.Typer(
    name="flywheel",
    help="Self-improvement rounds for language models, with every artifact kept.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations and the embedded PostgreSQL.", no_args_is_help=True)
store_app = typer.Typer(help="The content-addressed object store.", no_args_is_help=True)
server_app = typer.Typer(help="A local Prefect server (Postgres-backed).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(store_app, name="store")
app.add_typer(server_app, name="server")

# Wide enough for the per-round table when output goes to a file or a pipe (rich would
# otherwise wrap it at 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

P = ParamSpec("P")
R = TypeVar("R")


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from dataflywheel.db.embedded import EmbeddedPostgresError
    from dataflywheel.db.session import DatabaseUnavailable
    from dataflywheel.prefect_server import PrefectServerError
    from dataflywheel.spec import SpecError
    from dataflywheel.store import StoreError

    return (
        DatabaseUnavailable,
        EmbeddedPostgresError,
        StoreError,
        ValidationError,
        SpecError,
        PrefectServerError,
        LookupError,
    )


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print our errors as one message and exit 1 instead of showing a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _expected_errors() as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _settings() -> Settings:
    return Settings()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(f"dataflywheel {__version__}")
        raise typer.Exit()


# --- database -----------------------------------------------------------------------------


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import engine_from_settings

    engine = engine_from_settings(_settings())
    try:
        migrate.upgrade(engine, revision)
        out.print(f"database at revision {migrate.current(engine)}")
    finally:
        engine.dispose()


@db_app.command("downgrade")
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
    engine = engine_from_settings(_settings())
    try:
        migrate.downgrade(engine, revision)
        out.print(f"database at revision {migrate.current(engine) or 'base (empty)'}")
    finally:
        engine.dispose()


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision and the newest one available."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import engine_from_settings

    engine = engine_from_settings(_settings())
    try:
        current, head = migrate.current(engine), migrate.head()
    finally:
        engine.dispose()
    state = "up to date" if current == head else "run `flywheel db upgrade`"
    out.print(f"current: {current or 'base (empty)'}  head: {head}  ({state})")


@db_app.command("url")
@friendly_errors
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password too.")] = False,
) -> None:
    """Print the database URL (starting the embedded server if that is the one in use)."""
    from dataflywheel.db.session import redact, resolve_database_url

    url = resolve_database_url(_settings())
    print(url if show_password else redact(url))


@db_app.command("start")
@friendly_errors
def db_start() -> None:
    """Start the embedded PostgreSQL (a no-op if it is running or a URL is configured)."""
    from dataflywheel.db import embedded

    settings = _settings()
    if settings.database_url:
        out.print("FLYWHEEL_DATABASE_URL is set; the embedded server is not used")
        return
    server = embedded.start(settings.embedded_pgdata)
    out.print(f"embedded PostgreSQL running (pid {server.pid}) in {server.pgdata}")


@db_app.command("stop")
@friendly_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL cleanly (a fast shutdown: sessions end, data is kept)."""
    from dataflywheel.db import embedded

    pgdata = _settings().embedded_pgdata
    if embedded.stop(pgdata):
        out.print(f"embedded PostgreSQL in {pgdata} stopped")
    else:
        out.print(f"no embedded PostgreSQL running in {pgdata}")


@db_app.command("status")
@friendly_errors
def db_status() -> None:
    """Say whether the embedded PostgreSQL is running."""
    from dataflywheel.db import embedded

    settings = _settings()
    if settings.database_url:
        out.print("using FLYWHEEL_DATABASE_URL (embedded server not used)")
        return
    server = embedded.running(settings.embedded_pgdata)
    if server is None:
        out.print(f"embedded PostgreSQL in {settings.embedded_pgdata}: stopped")
        raise typer.Exit(3)
    out.print(f"embedded PostgreSQL in {server.pgdata}: running (pid {server.pid})")


# --- object store -------------------------------------------------------------------------


@store_app.command("put")
@friendly_errors
def store_put(
    path: Annotated[Path, typer.Argument(exists=True, readable=True, help="A file or folder.")],
) -> None:
    """Store a file (or a folder, as a manifest of files) and print its key."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(_settings())
    ref = store.put_tree(path) if path.is_dir() else store.put_file(path)
    print(ref.key)


@store_app.command("get")
@friendly_errors
def store_get(
    key: Annotated[str, typer.Argument(help="Object key (sha256/..) or bare digest.")],
    dest: Annotated[Path, typer.Argument(help="Where to write the file or folder.")],
    tree: Annotated[bool, typer.Option("--tree", help="KEY is a folder manifest.")] = False,
) -> None:
    """Fetch an object (verifying its digest) into DEST."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(_settings())
    written = store.get_tree(key, dest) if tree else store.get_file(key, dest)
    out.print(f"wrote {written}")


@store_app.command("ls")
@friendly_errors
def store_ls(
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
) -> None:
    """List stored objects with their sizes."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(_settings())
    count = 0
    for info in store.list(prefix):
        print(f"{info.size:>12}  {info.key}")
        count += 1
    err.print(f"{count} object(s) in {store.uri}")


# --- runs ---------------------------------------------------------------------------------


def _ready_database(settings: Settings) -> None:
    """Connect, and bring an embedded database to the newest schema (an external one must be
    migrated on purpose: `flywheel db upgrade`)."""
    from dataflywheel.db import migrate
    from dataflywheel.db.session import DatabaseUnavailable, engine_from_settings

    engine = engine_from_settings(settings)
    try:
        current, head = migrate.current(engine), migrate.head()
        if current == head:
            return
        if settings.database_url:
            raise DatabaseUnavailable(
                f"the database at FLYWHEEL_DATABASE_URL is at revision {current or 'base'}, "
                f"the code needs {head}: run `flywheel db upgrade`"
            )
        migrate.upgrade(engine)
        err.print(f"embedded database migrated to {head}")
    finally:
        engine.dispose()


def _prepare_flow_environment(settings: Settings) -> None:
    """Make the flow, its tasks and its Ray workers see the same absolute settings."""
    from dataflywheel.prefect_server import ensure_api
    from workers.pool import RayUnavailable, probe

    try:  # a cluster that does not answer is refused before anything is recorded
        probe(settings.ray_address)
    except RayUnavailable as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None

    os.environ["FLYWHEEL_DATA_DIR"] = str(settings.resolved_data_dir)
    os.environ["PREFECT_API_URL"] = ensure_api(settings)


@app.command()
@friendly_errors
def run(
    spec_path: Annotated[Path, typer.Argument(help="The run spec (YAML or JSON).")],
) -> None:
    """Run every round of SPEC_PATH and print the run id."""
    from dataflywheel.spec import load_spec

    spec = load_spec(spec_path)  # refused before anything runs when it is invalid
    settings = _settings()
    _ready_database(settings)
    _prepare_flow_environment(settings)
    from flows.flywheel_run import flywheel_run

    run_id = flywheel_run(spec)
    _print_summary(run_id)
    print(run_id)


@app.command()
@friendly_errors
def resume(run_id: Annotated[int, typer.Argument(help="The run to continue.")]) -> None:
    """Continue a run that stopped: finished work is kept, the rest is done."""
    from dataflywheel.db import queries
    from dataflywheel.db.session import engine_from_settings, session_scope
    from dataflywheel.spec import RunSpec

    settings = _settings()
    _ready_database(settings)
    engine = engine_from_settings(settings)
    with session_scope(engine) as session:
        spec = RunSpec.model_validate(queries.get_run(session, run_id).spec)
    engine.dispose()
    _prepare_flow_environment(settings)
    from flows.flywheel_run import flywheel_run

    flywheel_run(spec, run_id=run_id)
    _print_summary(run_id)
    print(run_id)


def _print_summary(run_id: int) -> None:
    from dataflywheel.db.session import engine_from_settings, session_scope
    from dataflywheel.reporting import render_table, run_report

    engine = engine_from_settings(_settings())
    with session_scope(engine) as session:
        err.print(render_table(run_report(session, run_id)))
    engine.dispose()


# --- reports ------------------------------------------------------------------------------
# cli_report never imports cli (no cycle under `python -m dataflywheel.cli`), so the error
# wrapper is applied here, where the commands are registered.
from dataflywheel import cli_report  # noqa: E402

app.command("runs")(friendly_errors(cli_report.runs))
app.command("report")(friendly_errors(cli_report.report))
app.command("lineage")(friendly_errors(cli_report.lineage))
from dataflywheel import cli_api  # noqa: E402  (api, api-key, deploy: issue 6)

cli_api.register(app, friendly_errors)
from dataflywheel import cli_ops  # noqa: E402

for _name in ("check", "replay", "diff"):
    app.command(_name)(friendly_errors(getattr(cli_ops, _name)))
from dataflywheel import cli_rescore  # noqa: E402  (rescore: issue 5)

app.command("rescore")(friendly_errors(cli_rescore.rescore))


# --- local Prefect server -----------------------------------------------------------------


@server_app.command("start")
@friendly_errors
def server_start() -> None:
    """Start a local Prefect server (UI included) on our PostgreSQL; reuse a running one."""
    from dataflywheel.prefect_server import start

    settings = _settings()
    _ready_database(settings)
    info = start(settings)
    out.print(
        f"Prefect server (pid {info.pid}): UI http://127.0.0.1:{info.port}  API {info.api_url}"
    )
    out.print(f"export PREFECT_API_URL={info.api_url}")


@server_app.command("stop")
@friendly_errors
def server_stop() -> None:
    """Stop the local Prefect server a previous command started."""
    from dataflywheel.prefect_server import stop

    out.print("stopped" if stop(_settings()) else "no local Prefect server was running")


@server_app.command("status")
@friendly_errors
def server_status() -> None:
    """Say whether the local Prefect server is running."""
    from dataflywheel.prefect_server import running

    info = running(_settings())
    if info is None:
        out.print("no local Prefect server is running")
        raise typer.Exit(3)
    out.print(f"running (pid {info.pid}) at {info.api_url}")


# --- doctor -------------------------------------------------------------------------------


@app.command()
def doctor() -> None:
    """Check Python, packages, database, object store, Ray, Prefect and vLLM; say what to fix."""
    from dataflywheel.doctor import run_checks

    checks = run_checks(_settings())
    table = Table(title="flywheel doctor", show_lines=False)
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    colour = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for check in checks:
        # Details hold user text such as "pip install -e '.[cpu]'": never parse it as markup.
        table.add_row(
            escape(check.name),
            f"[{colour[check.status]}]{check.status}[/]",
            escape(check.detail),
            escape(check.fix),
        )
    out.print(table)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        err.print(f"[bold red]{len(failed)} check(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    out.print("[green]all required checks passed[/]")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
