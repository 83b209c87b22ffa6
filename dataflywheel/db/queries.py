"""Reads and idempotent writes of runs, rounds and the stage/shard ledger — the bookkeeping
a round does around its model work (checkpoints, datasets and evaluations: ``checkpoints``).

Runs in: anywhere with a session (Prefect tasks, the CLI, the API). Functions take a
``Session`` and never commit. Every insert goes through the table's natural key with
``ON CONFLICT DO NOTHING`` and then reads the row back, so calling any of them twice with the
same arguments leaves one row — the property Prefect retries and ``flywheel resume`` rely on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from dataflywheel.db.models import Round, Run, StageShard
from dataflywheel.spec import RunSpec


def now() -> datetime:
    return datetime.now(UTC)


# --- runs and rounds ----------------------------------------------------------------------


def create_run(
    session: Session,
    *,
    name: str,
    spec: dict[str, Any],
    spec_hash: str,
    idempotency_key: str | None = None,
    replay_of_round_id: int | None = None,
) -> int:
    """Insert a run; with an idempotency key, a repeated call returns the first run's id."""
    values = dict(
        name=name,
        spec=spec,
        spec_hash=spec_hash,
        idempotency_key=idempotency_key,
        replay_of_round_id=replay_of_round_id,
    )
    if idempotency_key is None:
        return session.execute(sa.insert(Run).values(**values).returning(Run.id)).scalar_one()
    session.execute(
        insert(Run).values(**values).on_conflict_do_nothing(constraint="uq_runs_idempotency_key")
    )
    return session.execute(
        sa.select(Run.id).where(Run.idempotency_key == idempotency_key)
    ).scalar_one()


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist; `flywheel runs` lists the runs")
    return run


def run_spec(session: Session, run_id: int) -> RunSpec:
    """The run's spec, as the typed model it was validated into when the run was created."""
    return RunSpec.model_validate(get_run(session, run_id).spec)


def set_run_status(session: Session, run_id: int, status: str, error: str | None = None) -> None:
    values: dict[str, Any] = {"status": status, "error": error}
    if status == "running":
        values["started_at"] = sa.func.coalesce(Run.started_at, sa.func.now())
        values["finished_at"] = None
    elif status in ("succeeded", "failed", "cancelled"):
        values["finished_at"] = sa.func.now()
    session.execute(sa.update(Run).where(Run.id == run_id).values(**values))


def ensure_round(session: Session, run_id: int, index: int, seed: int) -> int:
    session.execute(
        insert(Round)
        .values(run_id=run_id, index=index, seed=seed)
        .on_conflict_do_nothing(constraint="uq_rounds_run_id_index")
    )
    return session.execute(
        sa.select(Round.id).where(Round.run_id == run_id, Round.index == index)
    ).scalar_one()


def get_round(session: Session, round_id: int) -> Round:
    found = session.get(Round, round_id)
    if found is None:
        raise LookupError(f"round {round_id} does not exist")
    return found


def round_by_index(session: Session, run_id: int, index: int) -> Round | None:
    return session.execute(
        sa.select(Round).where(Round.run_id == run_id, Round.index == index)
    ).scalar_one_or_none()


def set_round_status(session: Session, round_id: int, status: str) -> None:
    values: dict[str, Any] = {"status": status}
    if status == "running":
        values["started_at"] = sa.func.coalesce(Round.started_at, sa.func.now())
    elif status in ("succeeded", "failed"):
        values["finished_at"] = sa.func.now()
    session.execute(sa.update(Round).where(Round.id == round_id).values(**values))


def merge_round_manifest(session: Session, round_id: int, patch: dict[str, Any]) -> None:
    """Shallow-merge ``patch`` into the round's manifest (JSONB ``||``)."""
    session.execute(
        sa.update(Round)
        .where(Round.id == round_id)
        .values(
            manifest=sa.func.coalesce(Round.manifest, sa.text("'{}'::jsonb")).op("||")(
                sa.cast(patch, Round.manifest.type)
            )
        )
    )


def set_manifest_digest(session: Session, round_id: int, digest: str | None) -> None:
    """The digest of the round's manifest as stored, content-addressed, in the object store."""
    session.execute(sa.update(Round).where(Round.id == round_id).values(manifest_digest=digest))


def add_compute_seconds(session: Session, round_id: int, stage: str, seconds: float) -> None:
    """Add to ``manifest.compute_seconds[stage]``: time spent in model or verifier code, as
    opposed to the plumbing around it (the overhead benchmark compares the two).

    The row lock is ``FOR NO KEY UPDATE``: every sample, score or ledger row written earlier
    in the same transaction took a ``FOR KEY SHARE`` lock on this round through its foreign
    key, and two peers committing shards at once each hold one. ``FOR UPDATE`` conflicts with
    the other's key-share lock, so each waited for the other: a deadlock (seen in the
    arithmetic example's round 2). A manifest update changes no key, and the lock that fits
    it does not conflict with key-share locks."""
    rnd = session.execute(
        sa.select(Round)
        .where(Round.id == round_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).scalar_one()
    manifest = dict(rnd.manifest or {})
    compute = dict(manifest.get("compute_seconds") or {})
    compute[stage] = compute.get(stage, 0.0) + seconds
    manifest["compute_seconds"] = compute
    rnd.manifest = manifest


def add_gpu_leases(session: Session, round_id: int, leases: list[dict[str, Any]]) -> None:
    """Append to ``manifest.gpu_leases``: who held which GPUs of which node when
    (``workers/driver/gpu_lease.py``). Timings, like ``compute_seconds``: kept beside the
    content-addressed manifest, never in it. Locked like :func:`add_compute_seconds`."""
    if not leases:
        return
    rnd = session.execute(
        sa.select(Round)
        .where(Round.id == round_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).scalar_one()
    manifest = dict(rnd.manifest or {})
    manifest["gpu_leases"] = [*(manifest.get("gpu_leases") or []), *leases]
    rnd.manifest = manifest


# --- the stage/shard ledger ---------------------------------------------------------------


def plan_shards(
    session: Session, round_id: int, stage: str, input_digests: Sequence[str]
) -> dict[int, str]:
    """Record a stage's shards as pending (once) and return {shard_index: status}.

    A shard whose input digest changed since it was planned is an error: the round's inputs
    are derived deterministically, so a mismatch means the code or spec changed under a
    resume, and mixing the two would corrupt the round.
    """
    if input_digests:
        session.execute(
            insert(StageShard)
            .values(
                [
                    {"round_id": round_id, "stage": stage, "shard_index": i, "input_digest": d}
                    for i, d in enumerate(input_digests)
                ]
            )
            .on_conflict_do_nothing(constraint="uq_stage_shards_round_id_stage_shard_index")
        )
    rows = session.execute(
        sa.select(StageShard.shard_index, StageShard.status, StageShard.input_digest).where(
            StageShard.round_id == round_id, StageShard.stage == stage
        )
    ).all()
    for index, _status, digest in rows:
        if index < len(input_digests) and digest != input_digests[index]:
            raise RuntimeError(
                f"round {round_id} stage {stage} shard {index}: its inputs changed since it was "
                "planned (code or spec changed under a resume); start a new run instead"
            )
    return {index: status for index, status, _ in rows}


def mark_shard(
    session: Session,
    round_id: int,
    stage: str,
    shard_index: int,
    status: str,
    *,
    worker_node: str | None = None,
    output_key: str | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "error": error}
    if status == "running":
        values["attempt"] = StageShard.attempt + 1
        values["started_at"] = sa.func.now()
    if status in ("done", "failed"):
        values["finished_at"] = sa.func.now()
    if worker_node is not None:
        values["worker_node"] = worker_node
    if output_key is not None:
        values["output_key"] = output_key
    session.execute(
        sa.update(StageShard)
        .where(
            StageShard.round_id == round_id,
            StageShard.stage == stage,
            StageShard.shard_index == shard_index,
        )
        .values(**values)
    )
