"""``flywheel plan SPEC``: the GPU memory plan of a run spec, and its verdict.

Runs in: the user's shell (the CLI process). It reads the spec and the model's config only:
no database, Ray or Prefect is started, so it answers in a second on any machine. The same
plan refuses a spec before ``flywheel run`` and ``POST /runs`` create anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dataflywheel.cli.common import CommandError, out
from dataflywheel.gpu.memory_plan import DEFAULT_PROMPT_TOKENS, MemoryPlan, plan_for_spec
from dataflywheel.gpu.worker_plan import WorkerPlan, format_bytes


def plan(
    spec_path: Annotated[Path, typer.Argument(help="The run spec (YAML or JSON).")],
    prompt_tokens: Annotated[
        int,
        typer.Option(
            "--prompt-tokens",
            min=1,
            help="Prompt length assumed for the sequences trained on (completions add "
            "generation.max_tokens).",
        ),
    ] = DEFAULT_PROMPT_TOKENS,
) -> None:
    """Estimate each GPU worker's memory for SPEC_PATH; exit 1 when it cannot fit."""
    from dataflywheel.spec import load_spec

    spec = load_spec(spec_path)
    result = plan_for_spec(spec, prompt_tokens)
    print_plan(spec.name, spec.model.source, result)
    if result.refused:
        raise CommandError("the memory plan refuses this spec:\n" + result.message)


def print_plan(name: str, source: str, result: MemoryPlan) -> None:
    out.print(
        f"[bold]memory plan[/] of {escape(name)}: model {escape(source)} ({result.model})",
        highlight=False,
    )
    for worker in result.workers:
        out.print(_table(worker))
    for note in result.notes:
        out.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    colour = {"fits": "green", "refused": "bold red", "unchecked": "yellow"}[result.verdict]
    out.print(f"verdict: [{colour}]{result.verdict}[/]")


def _table(worker: WorkerPlan) -> Table:
    per = "one engine" if worker.kind == "generation" else "one training worker"
    table = Table(title=f"{worker.kind}: {per}, per GPU")
    table.add_column("component", overflow="fold")
    table.add_column("memory", justify="right")
    for line in worker.lines:
        table.add_row(escape(line.component), format_bytes(line.bytes))
    verdict = "[green]fits[/]" if worker.fits else "[bold red]does not fit[/]"
    table.add_section()
    table.add_row("[bold]total[/]", f"[bold]{format_bytes(worker.total)}[/]")
    table.add_row(
        f"budget: {escape(worker.budget_source)}", f"{format_bytes(worker.budget)} {verdict}"
    )
    for note in worker.notes:
        table.add_row(f"[dim]{escape(note)}[/]", "")
    return table
