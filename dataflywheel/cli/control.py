"""``flywheel api`` (serve the HTTP API with uvicorn), ``flywheel api-key create|list|revoke``
and ``flywheel deploy`` (register the Prefect deployments).

Runs in: the user's shell (the CLI process). :func:`register` adds the commands to the app.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dataflywheel.cli.common import err, fail, friendly_errors, out, ready_database
from dataflywheel.config import Settings


def _engine(settings: Settings):
    from dataflywheel.db.session import engine_from_settings

    return engine_from_settings(settings)


def key_create(
    name: Annotated[str, typer.Argument(help="Who or what will use the key, e.g. 'ci'.")],
) -> None:
    """Create a key and print its token once (only its sha256 is stored)."""
    from dataflywheel.db import api_queries
    from dataflywheel.db.session import session_scope

    engine = _engine(Settings())
    try:
        with session_scope(engine) as session:
            key, token = api_queries.create_api_key(session, name)
            key_id = key.id
    finally:
        engine.dispose()
    err.print(f"API key #{key_id} '{escape(name)}' created; it is shown only this once:")
    print(token)


def key_list() -> None:
    """List keys: id, name, prefix, created, last used, revoked."""
    from dataflywheel.db import api_queries
    from dataflywheel.db.session import session_scope

    engine = _engine(Settings())
    try:
        with session_scope(engine) as session:
            keys = api_queries.list_api_keys(session)
    finally:
        engine.dispose()
    table = Table(title="API keys")
    for column in ("id", "name", "prefix", "created", "last used", "revoked"):
        table.add_column(column)

    def when(value) -> str:
        return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"

    for k in keys:
        table.add_row(str(k.id), escape(k.name), k.prefix + "…", when(k.created_at),
                      when(k.last_used_at), when(k.revoked_at))  # fmt: skip
    out.print(table if keys else "no API keys yet: `flywheel api-key create NAME`")


def key_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's id or its prefix (`flywheel api-key list`).")
    ],
) -> None:
    """Revoke a key: requests carrying it get 401 from now on."""
    from dataflywheel.db import api_queries
    from dataflywheel.db.session import session_scope

    engine = _engine(Settings())
    try:
        with session_scope(engine) as session:
            revoked = api_queries.revoke_api_key(session, key)
            label = f"#{revoked.id} '{revoked.name}'"
    finally:
        engine.dispose()
    out.print(f"API key {escape(label)} revoked")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs, sample browser at /ui)."""
    import uvicorn

    ready_database(Settings())  # fail now, with the setting to fix, rather than per request
    err.print(f"dataflywheel API on http://{host}:{port}  (docs /docs, sample browser /ui)")
    uvicorn.run(
        "dataflywheel.api.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def deploy(
    name: Annotated[str, typer.Option(help="Deployment name.")] = "flywheel",
    flow: Annotated[
        list[str] | None,
        typer.Option(
            help="Flow to deploy (repeatable): flywheel_run, rescore, flywheel_replay "
            "(default: all three)."
        ),
    ] = None,
    pool: Annotated[str, typer.Option(help="Work pool (created, type process, if missing).")] = (
        "flywheel"
    ),
    cron: Annotated[
        str | None, typer.Option(help="Cron schedule, 5 fields, e.g. '0 3 * * *' (03:00 daily).")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Interval schedule: <n>s|m|h|d, e.g. 6h, or seconds.")
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone of a cron schedule.")] = (
        None
    ),
    spec: Annotated[
        Path | None,
        typer.Option(
            help="Run spec for scheduled runs (the form's default); needed with a schedule."
        ),  # fmt: skip
    ] = None,
    gpu_slots: Annotated[
        int, typer.Option(min=1, help="Runs and GPU-bound tasks allowed at once.")
    ] = 1,
    source: Annotated[
        Path | None, typer.Option(help="Code checkout the worker runs from [default: this one].")
    ] = None,
) -> None:
    """Register flywheel_run, rescore and flywheel_replay as Prefect deployments (typed
    parameter forms), with an optional schedule for flywheel_run, a process work pool and GPU
    concurrency limits."""
    from dataflywheel import deploy as deploying
    from dataflywheel.prefect_server import ensure_api

    settings = Settings()
    schedule = deploying.parse_schedule(cron=cron, interval=interval, timezone=timezone)
    options = deploying.DeployOptions(
        name=name,
        flows=tuple(flow) if flow else tuple(deploying.ENTRYPOINTS),
        work_pool=pool,
        schedule=schedule,
        spec_path=spec,
        gpu_slots=gpu_slots,
        source=source,
    )
    deploying.check_options(options)  # refused before a Prefect server is started or asked
    api_url = ensure_api(settings)
    result = deploying.deploy(options, api_url)
    out.print(deploying.next_steps(result, api_url), highlight=False, soft_wrap=True)


def _refusals(func: Callable[..., Any]) -> Callable[..., Any]:
    """A bad schedule or deploy option is one ``error:`` line and exit 1, like our other
    errors (``common.friendly_errors`` handles those)."""
    from dataflywheel.deploy import ScheduleError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ScheduleError, ValueError) as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise
            raise fail(str(exc)) from None

    return wrapper


def register(app: typer.Typer) -> None:
    """Add ``api``, ``api-key …`` and ``deploy`` to the ``flywheel`` command."""
    wrap = friendly_errors
    keys = typer.Typer(help="API keys of the HTTP API (stored hashed).", no_args_is_help=True)
    keys.command("create")(wrap(_refusals(key_create)))
    keys.command("list")(wrap(key_list))
    keys.command("revoke")(wrap(key_revoke))
    app.add_typer(keys, name="api-key")
    app.command("api")(wrap(serve))
    app.command("deploy")(wrap(_refusals(deploy)))
