"""``flywheel server …``: the data directory's local Prefect server.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

import typer

from dataflywheel.cli.common import friendly_errors, out, ready_database, settings

app = typer.Typer(help="A local Prefect server (Postgres-backed).", no_args_is_help=True)


@app.command("start")
@friendly_errors
def server_start() -> None:
    """Start a local Prefect server (UI included) on our PostgreSQL; reuse a running one."""
    from dataflywheel.prefect_server import start

    settings_ = settings()
    ready_database(settings_, migrate_embedded=True)
    info = start(settings_)
    out.print(
        f"Prefect server (pid {info.pid}): UI http://127.0.0.1:{info.port}  API {info.api_url}"
    )
    out.print(f"export PREFECT_API_URL={info.api_url}")


@app.command("stop")
@friendly_errors
def server_stop() -> None:
    """Stop the local Prefect server a previous command started."""
    from dataflywheel.prefect_server import stop

    out.print("stopped" if stop(settings()) else "no local Prefect server was running")


@app.command("status")
@friendly_errors
def server_status() -> None:
    """Say whether the local Prefect server is running."""
    from dataflywheel.prefect_server import running

    info = running(settings())
    if info is None:
        out.print("no local Prefect server is running")
        raise typer.Exit(3)
    out.print(f"running (pid {info.pid}) at {info.api_url}")
