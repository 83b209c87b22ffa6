"""``flywheel rescore RUN_ID --verifier NAME``: score stored samples again, no regeneration.

Runs in: the user's shell (the CLI process, which becomes the flow process and the Ray
driver inside ``flow_env.flow_session``). A plain function that ``main`` registers with the
shared error wrapper.
Verifiers are named from the run's spec (``--verifier``) or given as configuration files
(``--config``: a YAML/JSON mapping such as ``{name: llm_judge, model: current}``, relative
paths read from the file's folder). Every request is checked before anything starts; then the
``rescore`` Prefect flow (``flows/rescore.py``, the same flow the ``rescore`` deployment runs)
does the work: rows are unique per (sample, verifier, version), so a second identical rescore
inserts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from dataflywheel.cli.common import fail, out, ready_database, settings
from dataflywheel.cli.flow_env import flow_session


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {path}: cannot read a verifier configuration ({exc})") from None
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"--config {path}: must be a mapping with a verifier 'name'")
    return data


def rescore(
    run_id: Annotated[int, typer.Argument(help="The run whose samples are scored again.")],
    verifier: Annotated[
        list[str] | None,
        typer.Option("--verifier", "-v", help="A verifier of the run's spec (repeatable)."),
    ] = None,
    config: Annotated[
        list[Path] | None,
        typer.Option("--config", help="A verifier configuration file (YAML/JSON; repeatable)."),
    ] = None,
    purpose: Annotated[
        list[str] | None,
        typer.Option("--purpose", help="train, eval or baseline samples (default: all)."),
    ] = None,
    round_index: Annotated[
        int | None, typer.Option("--round", help="Only this round index (default: every round).")
    ] = None,
) -> None:
    """Re-score a run's stored samples with named verifiers (new versions add rows)."""
    try:
        _rescore(run_id, verifier or [], config or [], purpose, round_index)
    except ValueError as exc:  # our own messages name the option to fix
        raise fail(str(exc)) from None


def _rescore(
    run_id: int,
    verifier: list[str],
    config: list[Path],
    purpose: list[str] | None,
    round_index: int | None,
) -> None:
    from pydantic import TypeAdapter, ValidationError

    from dataflywheel.db import queries
    from dataflywheel.spec import VerifierConfig, format_errors
    from tasks import context
    from tasks.rescore import PURPOSES, resolve_configs

    purposes = purpose or list(PURPOSES)
    unknown = sorted(set(purposes) - set(PURPOSES))
    if unknown:
        raise ValueError(f"--purpose: {unknown} unknown; choose from {list(PURPOSES)}")
    extra = []
    for path in config:
        data = _read_config(path)
        try:
            # Relative model paths are read from the configuration file's folder.
            parsed = TypeAdapter(VerifierConfig).validate_python(
                data, context={"base_dir": str(path.resolve().parent)}
            )
        except ValidationError as exc:
            raise ValueError(f"--config {path}: " + "; ".join(format_errors(exc))) from None
        extra.append(parsed.model_dump(mode="json"))
    current = settings()
    ready_database(current)
    context.reset()
    with context.session() as session:
        spec = queries.run_spec(session, run_id)
    resolve_configs(spec, verifier, extra)  # refused here, before Prefect or Ray start

    with flow_session(current):
        from flows.rescore import rescore as rescore_flow

        results = rescore_flow(run_id, verifier, extra, purposes, round_index)
    table = Table(title=f"run {run_id} rescored ({', '.join(purposes)})")
    for column in ("verifier", "version", "samples", "already", "inserted", "passed", "failed",
                   "unscorable"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("verifier", "version") else "right")
    for r in results:
        table.add_row(
            r.verifier, r.version[:12], str(r.samples), str(r.already_scored), str(r.inserted),
            str(r.passed), str(r.failed), str(r.unscorable),
        )  # fmt: skip
    out.print(table)
