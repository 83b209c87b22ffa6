"""Operations commands of ``flywheel``: ``check RUN_ID``, ``replay RUN_ID --round K`` and
``diff RUN_A:K RUN_B:K``.

Runs in: the user's shell (the CLI process; ``replay`` then becomes the flow process inside
``flow_env.flow_session``). Plain functions that ``main`` registers with the shared error
wrapper. ``check`` and ``diff`` only read. ``replay`` plans and proves every input
present before anything is written, warns loudly when code, packages or verifiers differ
from the source round's manifest, and only then imports the flow.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dataflywheel.cli.common import err, fail, out, read, ready_database, settings
from dataflywheel.cli.flow_env import flow_session, recover

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DIFFERENT_EXIT = 3  # `flywheel diff`: the rounds differ (1 stays "error")


def check(
    run_id: Annotated[int, typer.Argument(help="The run to check.")],
    objects: Annotated[
        bool, typer.Option(help="Also read every object the rows name from the store.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check a run's invariants: exact row counts per round, unique keys, objects present with
    matching digests, one manifest per finished round, dataset members that passed. Exit 1
    when any fails."""
    from dataflywheel.db import invariants
    from dataflywheel.store import store_from_settings

    current = settings()
    ready_database(current)
    recover(current)  # what a killed command left (its Prefect runs only if the server is up)

    def violations(session: Session) -> list[invariants.Violation]:
        found = invariants.check_run(session, run_id)
        if objects:
            found += invariants.check_objects(session, run_id, store_from_settings(current))
        session.rollback()  # read-only
        return found

    found = read(current, violations)
    if as_json:
        print(json.dumps([vars(v) for v in found], indent=2))
    for violation in found if not as_json else ():
        err.print(f"[red]✗[/] {escape(str(violation))}", highlight=False, soft_wrap=True)
    if found:
        err.print(f"[bold red]run {run_id}: {len(found)} invariant(s) violated[/]")
        raise typer.Exit(1)
    if not as_json:
        out.print(f"[green]run {run_id}: all invariants hold[/]")


def replay(
    run_id: Annotated[int, typer.Argument(help="The run whose round to replay.")],
    index: Annotated[int, typer.Option("--round", help="The round index to replay.")],
    strict: Annotated[
        bool, typer.Option(help="Refuse (exit 1) instead of warning on a version mismatch.")
    ] = False,
) -> None:
    """Re-execute round K of RUN_ID from its manifest into a new run marked as a replay
    (same spec, input checkpoint, seeds and prompts); print the new run id."""
    from dataflywheel import replay as replaying
    from dataflywheel.store import store_from_settings

    current = settings()
    ready_database(current)

    def planned(session: Session) -> replaying.ReplayPlan:
        plan = replaying.plan_replay(session, run_id, index)
        replaying.require_inputs(plan, store_from_settings(current))
        session.rollback()  # nothing is written before the flow starts
        return plan

    try:
        plan = read(current, planned)
    except replaying.ReplayError as exc:
        raise fail(str(exc)) from None
    from tasks.replay import mismatches

    warnings = mismatches(plan)
    if warnings:
        err.print(
            f"[bold yellow]WARNING: the environment differs from the one that ran run {run_id} "
            f"round {index}; the replay may not reproduce it bit for bit:[/]"
        )
        for line in warnings:
            err.print(f"[bold yellow]  - {escape(line)}[/]", highlight=False)
        if strict:
            raise fail("version mismatch and --strict given; nothing was written")

    with flow_session(current):
        from flows.replay import flywheel_replay

        new_id = flywheel_replay(run_id, index, warnings)
    rows = read(current, lambda s: _compare(s, (run_id, index), (new_id, index)))
    _print_diff(rows, f"run {run_id}", f"replay {new_id}", console=err)
    print(new_id)


def _compare(
    session: Session, a: tuple[int, int], b: tuple[int, int]
) -> list[tuple[str, Any, Any]]:
    """The fingerprint rows of round a[1] of run a[0] beside round b[1] of run b[0]."""
    from dataflywheel import replay as replaying

    return replaying.diff_fingerprints(
        replaying.round_fingerprint(session, *a), replaying.round_fingerprint(session, *b)
    )


def _parse_ref(ref: str) -> tuple[int, int]:
    run, sep, index = ref.partition(":")
    if not sep or not run.isdigit() or not index.isdigit():
        raise typer.BadParameter(f"{ref!r}: expected RUN_ID:ROUND, e.g. 12:1")
    return int(run), int(index)


def diff(
    a: Annotated[str, typer.Argument(help="RUN_ID:ROUND, e.g. 12:1")],
    b: Annotated[str, typer.Argument(help="RUN_ID:ROUND, e.g. 14:1")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare two rounds: sample, dataset and checkpoint digests, evaluation metrics.
    Exit 0 when identical, 3 when they differ."""
    rows = read(settings(), lambda s: _compare(s, _parse_ref(a), _parse_ref(b)))
    differing = [r for r in rows if r[1] != r[2] and r[0] != "round"]
    if as_json:
        doc = {"a": a, "b": b, "identical": not differing, "fields": _json_rows(rows)}
        print(json.dumps(doc, indent=2))
    else:
        _print_diff(rows, a, b, console=out)
    if differing:
        raise typer.Exit(DIFFERENT_EXIT)


def _json_rows(rows: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    return [{"field": f, "a": x, "b": y, "same": x == y} for f, x, y in rows]


def _print_diff(rows: list[tuple[str, Any, Any]], a: str, b: str, *, console: Console) -> None:
    table = Table(title=f"{a} vs {b}")
    for column in ("field", a, b, ""):
        table.add_column(column, overflow="fold")
    for field, x, y in rows:
        same = x == y
        show = (lambda v: json.dumps(v, sort_keys=True)) if field == "metrics" else str
        table.add_row(
            escape(field),
            escape(show(x)),
            escape(show(y)) if not same else "=",
            "[green]same[/]" if same else "[bold red]differs[/]",
        )
    console.print(table)
