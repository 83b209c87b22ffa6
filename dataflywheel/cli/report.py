"""The reading commands of ``flywheel``: ``runs``, ``report RUN_ID`` and ``lineage CKPT_ID``.

Runs in: the user's shell (the CLI process). Plain functions that ``main`` registers with
the shared error wrapper; an unknown id surfaces as a ``LookupError``, which it turns into
one ``error:`` line on stderr and exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from dataflywheel.cli.common import out, read
from dataflywheel.config import Settings

if TYPE_CHECKING:
    pass

R = TypeVar("R")


def _print_json(doc: dict[str, Any] | list[Any]) -> None:
    # Plain print, not rich: the output is for machines and must not be wrapped or coloured.
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many runs.")] = 50,
) -> None:
    """List runs, newest first: id, name, status, rounds done and when each was created."""
    from dataflywheel.reporting import list_runs

    listings = read(Settings(), lambda s: list_runs(s, limit=limit))
    if as_json:
        _print_json(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "status": r.status,
                    "rounds_done": r.rounds_done,
                    "rounds_planned": r.rounds_planned,
                    "created_at": r.created_at.isoformat(),
                }
                for r in listings
            ]
        )
        return
    if not listings:
        out.print("no runs yet")
        return
    table = Table(title="runs")
    table.add_column("id", justify="right")
    table.add_column("name")
    table.add_column("status")
    table.add_column("rounds done", justify="right")
    table.add_column("created")
    for r in listings:
        planned = f"/{r.rounds_planned}" if r.rounds_planned is not None else ""
        table.add_row(
            str(r.id),
            escape(r.name),
            r.status,
            f"{r.rounds_done}{planned}",
            r.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


def report(
    run_id: Annotated[int, typer.Argument(help="The run (see `flywheel runs`).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON to stdout; write no files.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.md and report.png [default: <data_dir>/reports/run-<id>].",
        ),
    ] = None,
) -> None:
    """Per-round numbers of a run: pass rates, yield, loss, the primary metric, promotions."""
    from dataflywheel.reporting import (
        render_table,
        report_folder,
        report_json,
        run_report,
        write_report,
    )

    settings = Settings()
    built = read(settings, lambda s: run_report(s, run_id))
    if as_json:
        _print_json(report_json(built))
        return
    md, plot = write_report(built, out_dir or report_folder(settings.resolved_data_dir, run_id))
    out.print(render_table(built))
    out.print(f"wrote {md} and {plot}", highlight=False, soft_wrap=True)


def lineage(
    checkpoint_id: Annotated[int, typer.Argument(help="The checkpoint to trace back.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a tree.")] = False,
) -> None:
    """What a checkpoint came from: its parents, their training data, who generated and
    passed it."""
    from dataflywheel.db.lineage import NotFound
    from dataflywheel.lineage_view import checkpoint_lineage, render_lineage

    try:
        doc = read(Settings(), lambda s: checkpoint_lineage(s, checkpoint_id))
    except NotFound as exc:
        raise NotFound(f"{exc}; `flywheel report RUN_ID` shows each round's checkpoint") from None
    if as_json:
        _print_json(doc)
        return
    out.print(render_lineage(doc))
