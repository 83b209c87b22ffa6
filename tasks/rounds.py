"""Round bookkeeping: open a round, name its generating checkpoint, close it with a manifest.

Runs in: Prefect task (flow process). ``start_round`` fixes the round's seed and curriculum
band (from the previous round's result: ``rounds/curriculum.py`` decides, the manifest records
the decision and the per-level accuracies it read), ``finish_round`` writes the reproducibility
manifest (``dataflywheel.rounds.manifest``: spec hash, seeds, code and package versions,
verifier versions, input and output digests; stage timings beside it) to the database and,
content-addressed, to the object store, then publishes two Prefect artifacts on the round's
flow run: the run's per-round table, and the run's report refreshed (``report.md`` and
``report.png`` written where ``flywheel report`` writes them) with its Markdown as a
markdown artifact that links the files. Both are keyed per run, so the Prefect UI shows the
newest and keeps one version per finished round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from dataflywheel import faults
from dataflywheel.db import checkpoints, queries
from dataflywheel.prompts import canonical_json
from dataflywheel.rounds import curriculum, manifest, plan
from dataflywheel.spec import RunSpec, derive_seed
from tasks import context


@task(
    name="start_round",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def start_round(run_id: int, index: int) -> int:
    """Create (or reopen) round ``index`` with its seed and curriculum band."""
    faults.pause_point(context.settings(), "round", index)
    with context.session() as session:
        spec = queries.run_spec(session, run_id)
        round_id = queries.ensure_round(
            session, run_id, index, derive_seed(spec.seed, "round", index)
        )
        rnd = queries.get_round(session, round_id)
        if not (rnd.manifest or {}).get("curriculum"):
            queries.merge_round_manifest(
                session, round_id, {"curriculum": _band_entry(session, spec, run_id, index)}
            )
        queries.set_round_status(session, round_id, "running")
        return round_id


def _band_entry(session: Session, spec: RunSpec, run_id: int, index: int) -> dict[str, Any]:
    """Round ``index``'s curriculum band, decided from the previous round's band and the
    incumbent's evaluation, with what the decision read (the manifest's ``curriculum``)."""
    band = plan.initial_band(spec)
    previous = queries.round_by_index(session, run_id, index - 1)
    c = (previous.manifest or {}).get("curriculum") if previous is not None else None
    if c:
        band = (c["min_difficulty"], c["max_difficulty"])
    if spec.curriculum is None:
        return {"min_difficulty": band[0], "max_difficulty": band[1]}
    if not c:
        return curriculum.Step(band, "start", "the prompts' band").manifest()
    incumbent = checkpoints.last_promoted(session, run_id, index)
    evaluation = checkpoints.evaluation_of(session, incumbent.id, plan.EVAL_SET)
    levels = (evaluation.metrics or {}).get("per_difficulty_accuracy") if evaluation else None
    step = curriculum.next_step(
        spec.curriculum,
        band,
        primary=evaluation.primary_value if evaluation else None,
        levels=levels if isinstance(levels, dict) else None,
        previous_levels=c.get("levels"),
    )
    return step.manifest()


@task(name="round_finished", persist_result=False, cache_policy=NO_CACHE)
def round_finished(run_id: int, index: int) -> bool:
    """Whether round ``index`` already succeeded (a resumed run skips it)."""
    with context.session() as session:
        rnd = queries.round_by_index(session, run_id, index)
        return rnd is not None and rnd.status == "succeeded"


@task(name="current_checkpoint", persist_result=False, cache_policy=NO_CACHE)
def current_checkpoint(run_id: int, index: int, peer: int = 0) -> int:
    """The checkpoint that generates round ``index``'s samples: the last promoted one (of
    ``peer``, when the run trains peers)."""
    with context.session() as session:
        return checkpoints.last_promoted(session, run_id, index, peer).id


def _round_record(session: Session, round_id: int) -> manifest.RoundRecord:
    """What the database holds of the round, as its manifest records it."""
    rnd = queries.get_round(session, round_id)
    checkpoint = checkpoints.round_candidate(session, round_id)
    parent = (
        checkpoints.get_checkpoint(session, checkpoint.parent_id)
        if checkpoint and checkpoint.parent_id
        else None
    )
    dataset = checkpoints.round_dataset(session, round_id, plan.TRAIN_DATASET)
    peers = [c for c in checkpoints.round_checkpoints(session, round_id) if c.peer > 0]
    return manifest.RoundRecord(
        index=rnd.index,
        seed=rnd.seed,
        curriculum=(rnd.manifest or {}).get("curriculum"),
        parent_checkpoint_digest=parent.digest if parent else None,
        dataset_digest=dataset.digest if dataset else None,
        checkpoint_digest=checkpoint.digest if checkpoint else None,
        peer_checkpoint_digests=[c.digest for c in peers],
    )


@task(
    name="finish_round",
    retries=2,
    retry_delay_seconds=5,
    persist_result=False,
    cache_policy=NO_CACHE,
)
def finish_round(round_id: int, stage_seconds: dict[str, float]) -> str:
    """Write the round's manifest, mark it succeeded, publish the artifacts; returns the
    manifest's object key."""
    with context.session() as session:
        rnd = queries.get_round(session, round_id)
        run = queries.get_run(session, rnd.run_id)
        spec = RunSpec.model_validate(run.spec)
        record = _round_record(session, round_id)
    code, packages = manifest.current_versions()
    written = manifest.round_manifest(spec, run.spec_hash, record, code, packages)
    ref = context.store().put_bytes(canonical_json(written).encode())
    with context.session() as session:
        queries.merge_round_manifest(
            session, round_id, {**written, "object_key": ref.key, "stage_seconds": stage_seconds}
        )
        queries.set_manifest_digest(session, round_id, ref.digest)
        queries.set_round_status(session, round_id, "succeeded")
        run_id, index = rnd.run_id, rnd.index
    publish_artifacts(run_id, index)
    return ref.key


def table_key(run_id: int) -> str:
    """The key of run ``run_id``'s per-round table artifact."""
    return f"flywheel-run-{run_id}"


def report_key(run_id: int) -> str:
    """The key of run ``run_id``'s report artifact (keys: lowercase letters, digits, dashes)."""
    return f"flywheel-run-{run_id}-report"


def publish_artifacts(run_id: int, index: int) -> Path | None:
    """After round ``index``: the run's per-round table, and its report — files refreshed,
    Markdown as an artifact linking them. Returns the Markdown file's path (None when the
    files could not be written)."""
    from dataflywheel.reporting import (
        markdown,
        report_folder,
        report_json,
        run_report,
        write_report,
    )

    with context.session() as session:
        report = run_report(session, run_id)
    rows = [
        {
            "round": r["index"],
            "status": r["status"],
            "samples": r.get("samples"),
            "kept": r.get("kept"),
            "yield": r.get("yield"),
            "primary": (r.get("eval") or {}).get("primary"),
            "promotion": r.get("promotion"),
        }
        for r in report_json(report)["rounds"]
    ]
    create_table_artifact(
        key=table_key(run_id),
        table=rows,
        description=f"dataflywheel run {run_id}: one row per round (`flywheel report {run_id}`)",
    )
    folder = report_folder(context.settings().resolved_data_dir, run_id)
    md: Path | None = None
    try:
        md, plot = write_report(report, folder)
    except OSError as exc:
        # The files are a view `flywheel report` rebuilds from the database at any time: a
        # worker that cannot write them still finishes the round, and says so.
        get_run_logger().warning("report files not written to %s: %s", folder, exc)
        links = f"Report files not written to `{folder}` ({exc})."
    else:
        # The UI cannot show a PNG from the worker's disk: the artifact links the files
        # rather than embedding the plot.
        links = (
            f"Report files: [{md.name}]({md.resolve().as_uri()}) · "
            f"[{plot.name}]({plot.resolve().as_uri()}) in `{folder}`"
        )
    title, _, rest = markdown(report).partition("\n")
    create_markdown_artifact(
        key=report_key(run_id),
        markdown=f"{title}\n\n{links} Refresh: `flywheel report {run_id}`.\n{rest}",
        description=f"dataflywheel run {run_id}: the report after round {index}",
    )
    return md
