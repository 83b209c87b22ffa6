"""The services a data directory runs on this machine, and ``flywheel down``, which stops
them all.

Runs in: the user's shell (the CLI process). A data directory's commands start up to three
kinds of local service: the embedded PostgreSQL, the local Prefect server (whose state is a
database on that PostgreSQL) and, per command that runs flows, a local Ray. ``down`` stops
them in the order that loses nothing: leftover Rays of killed commands first, then the
Prefect server, then PostgreSQL. It refuses while a flywheel command of this data directory
is still running (its run would fail halfway), naming its pid.
"""

from __future__ import annotations

from dataflywheel import prefect_owners
from dataflywheel.cli.common import CommandError, friendly_errors, out, settings
from dataflywheel.config import Settings
from workers.driver import ray_session


def running_commands(settings: Settings) -> list[int]:
    """Pids of the flywheel commands of this data directory that are still running."""
    return sorted(
        set(ray_session.live_owners(settings)) | set(prefect_owners.live_owners(settings))
    )


def users_of_database(settings: Settings) -> list[str]:
    """What still uses this data directory's embedded PostgreSQL, in words."""
    from dataflywheel.prefect_server import running

    users = [f"flywheel command (pid {pid})" for pid in running_commands(settings)]
    server = running(settings)
    if server is not None and not settings.database_url:
        users.append(f"the local Prefect server (pid {server.pid}; `flywheel server stop`)")
    return users


@friendly_errors
def down() -> None:
    """Stop everything local this data directory started: leftover Ray of killed commands,
    the local Prefect server, the embedded PostgreSQL. Data is kept."""
    from dataflywheel.cli.flow_env import recover
    from dataflywheel.db import embedded
    from dataflywheel.prefect_server import stop

    current = settings()
    busy = running_commands(current)
    if busy:
        raise CommandError(
            f"flywheel command(s) still running on {current.resolved_data_dir}: pid "
            f"{', '.join(map(str, busy))}; wait for them or stop them (Ctrl-C, `kill PID`), "
            "then run `flywheel down` again"
        )
    recover(current)  # marks a killed command's flow runs while the server still answers
    out.print("local Prefect server stopped" if stop(current) else "no local Prefect server")
    if current.database_url:
        out.print("FLYWHEEL_DATABASE_URL is set: its server is not ours to stop")
    elif embedded.stop(current.embedded_pgdata):
        out.print(f"embedded PostgreSQL in {current.embedded_pgdata} stopped")
    else:
        out.print("no embedded PostgreSQL running")
