"""The life of a command that runs flows (``run``, ``resume``, ``replay``, ``rescore``): clean
up what a killed command left, connect to Prefect and Ray once, and leave nothing behind.

Runs in: the user's shell (the CLI process, which becomes the flow process and the Ray
driver). :func:`flow_session` is the one place that

1. reports and cleans up what a command killed with SIGKILL left in this data directory: its
   local Ray's processes (``workers/driver/ray_session.py``) and its Prefect flow runs still
   ``Running`` (``dataflywheel/prefect_owners.py``), one line each;
2. gives the flows, their tasks and Ray workers the same absolute settings and a Prefect API
   (the configured one, or the data directory's local server);
3. connects to Ray once, before any concurrent task (two peers' tasks racing to
   ``ray.init`` started two local Rays);
4. on success, error, Ctrl-C or SIGTERM, shuts down the local Ray it started and removes its
   records, so the command exits with its own status and no Ray process of it survives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from rich.markup import escape

from dataflywheel import prefect_owners
from dataflywheel.cli.common import err
from dataflywheel.config import Settings
from tasks import context
from workers.driver import ray_session


def recover(settings: Settings) -> None:
    """Clean up after commands of this data directory that were killed, saying so. Their
    Prefect runs are marked only where the server they used answers (none is started)."""
    for reaped in ray_session.reap(settings):
        err.print(f"[yellow]recovered:[/] {escape(str(reaped))}", highlight=False)
    try:
        orphans = prefect_owners.crash_orphans(settings)
    except Exception as exc:  # bookkeeping of the UI: never a reason to refuse the command
        err.print(
            f"[yellow]warning:[/] could not mark a killed command's flow runs as Crashed in "
            f"Prefect ({escape(type(exc).__name__)}: {escape(str(exc))}); will try again next time",
            highlight=False,
        )
        return
    for found in orphans:
        err.print(f"[yellow]recovered:[/] {escape(str(found))}", highlight=False)


def _terminated(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (`kill PID`, a supervisor stopping us) takes the same way out as Ctrl-C, so the
    # cleanup below runs and Prefect records the interrupted runs as Crashed.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def flow_session(settings: Settings) -> Iterator[str]:
    """Run the block as this data directory's flow process; yields the Prefect API URL."""
    from prefect import tags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dataflywheel.prefect_server import ensure_api

    ray_session.probe(settings.ray_address)  # refused before anything is recorded
    os.environ["FLYWHEEL_DATA_DIR"] = str(settings.resolved_data_dir)
    api_url = ensure_api(settings)
    os.environ["PREFECT_API_URL"] = api_url
    context.reset()  # the tasks' handles are built from the environment just set
    recover(settings)
    owner = prefect_owners.register(settings, api_url)
    previous = signal.signal(signal.SIGTERM, _terminated)
    interrupted = False
    try:
        ray_session.connect(Settings())
        # Prefect read its settings when `flows` was first imported, perhaps before the URL
        # was known: pin it for this block.
        with temporary_settings({PREFECT_API_URL: api_url}), tags(owner.tag):
            yield api_url
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        ray_session.shutdown()
        prefect_owners.release(owner)
        signal.signal(signal.SIGTERM, previous)
        if interrupted:
            # Task threads may still wait on Ray calls that will never return; Python would
            # join them at exit. Everything of ours is cleaned up: leave now, as Ctrl-C does.
            err.print("[bold red]interrupted[/]: finished work is kept (`flywheel resume RUN_ID`)")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
