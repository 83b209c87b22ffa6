"""``flywheel doctor``: what is installed, reachable and writable, and how to fix what is not.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from dataflywheel.cli.common import err, out, settings


def doctor() -> None:
    """Check Python, packages, database, object store, Ray, Prefect and vLLM; say what to fix."""
    from dataflywheel.doctor import run_checks

    checks = run_checks(settings())
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
