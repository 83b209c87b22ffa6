"""``flywheel run SPEC`` and ``flywheel resume RUN_ID``: the CLI process becomes the flow
process of a run.

Runs in: the user's shell (the CLI process, then the flow process and the Ray driver inside
:func:`~dataflywheel.cli.flow_env.flow_session`). ``flows`` is imported inside the commands:
the CLI is the one edge where the core hands over to the orchestration layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflywheel.cli.common import CommandError, err, read, ready_database, settings
from dataflywheel.cli.flow_env import flow_session, recover


def run(
    spec_path: Annotated[Path, typer.Argument(help="The run spec (YAML or JSON).")],
) -> None:
    """Run every round of SPEC_PATH and print the run id."""
    from dataflywheel.gpu.memory_plan import plan_for_spec
    from dataflywheel.spec import load_spec

    spec = load_spec(spec_path)  # refused before anything runs when it is invalid
    memory = plan_for_spec(spec)  # as is a spec whose GPU workers cannot fit
    if memory.refused:
        raise CommandError(
            f"the memory plan refuses this spec (`flywheel plan {spec_path}` shows the "
            f"estimate):\n{memory.message}"
        )
    current = settings()
    ready_database(current, migrate_embedded=True)
    with flow_session(current):
        from flows.flywheel_run import flywheel_run

        run_id = flywheel_run(spec)
    print_summary(run_id)
    print(run_id)


def resume(run_id: Annotated[int, typer.Argument(help="The run to continue.")]) -> None:
    """Continue a run that stopped: finished work is kept, the rest is done."""
    from dataflywheel.db import queries

    current = settings()
    ready_database(current, migrate_embedded=True)
    spec, status = read(
        current, lambda s: (queries.run_spec(s, run_id), queries.get_run(s, run_id).status)
    )
    if status == "succeeded":  # every round is done: no Ray, no flow run, nothing written
        recover(current)  # still the cleanup every command owes a killed one
        err.print(f"run {run_id} already succeeded: nothing to resume")
        print_summary(run_id)
        print(run_id)
        return
    with flow_session(current):
        from flows.flywheel_run import flywheel_run

        flywheel_run(spec, run_id=run_id)
    print_summary(run_id)
    print(run_id)


def print_summary(run_id: int) -> None:
    """The run's per-round table, on stderr (stdout carries the run id for scripts)."""
    from dataflywheel.reporting import render_table, run_report

    err.print(render_table(read(settings(), lambda s: run_report(s, run_id))))
