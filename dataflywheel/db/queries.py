"""Reads and idempotent writes of runs, rounds, checkpoints, datasets, evaluations and the
stage/shard ledger — the bookkeeping a round does around its model work.

Runs in: anywhere with a session (Prefect tasks, the CLI, the API). Functions take a
``Session`` and never commit. Every insert goes through the table's natural key with
``ON CONFLICT DO NOTHING`` and then reads the row back, so calling any of them twice with the
same arguments leaves one row — the property Prefect retries and ``flywheel resume`` rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from dataflywheel.db.models import (
    Checkpoint,
    CheckpointDataset,
    Dataset,
    DatasetMember,
    Evaluation,
    EvaluationResult,
    Round,
    Run,
    StageShard,
)
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


# --- checkpoints --------------------------------------------------------------------------


def ensure_checkpoint(
    session: Session,
    *,
    run_id: int,
    round_id: int | None,
    parent_id: int | None,
    status: str,
    source_uri: str | None = None,
    training_config: dict[str, Any] | None = None,
    peer: int = 0,
) -> int:
    """The run's base checkpoint (round_id None) or a round's checkpoint, created once."""
    session.execute(
        insert(Checkpoint)
        .values(
            run_id=run_id,
            round_id=round_id,
            peer=peer,
            parent_id=parent_id,
            status=status,
            source_uri=source_uri,
            training_config=training_config,
        )
        .on_conflict_do_nothing(constraint="uq_checkpoints_run_id_round_id_peer")
    )
    round_clause = (
        Checkpoint.round_id.is_(None) if round_id is None else Checkpoint.round_id == round_id
    )
    return session.execute(
        sa.select(Checkpoint.id).where(
            Checkpoint.run_id == run_id, round_clause, Checkpoint.peer == peer
        )
    ).scalar_one()


def get_checkpoint(session: Session, checkpoint_id: int) -> Checkpoint:
    found = session.get(Checkpoint, checkpoint_id)
    if found is None:
        raise LookupError(f"checkpoint {checkpoint_id} does not exist")
    return found


def set_checkpoint_weights(
    session: Session,
    checkpoint_id: int,
    *,
    object_key: str,
    digest: str,
    training_metrics: dict[str, Any] | None = None,
) -> None:
    """Point the row at its uploaded weights: called only after the upload finished, so no
    row ever points at a missing object."""
    values: dict[str, Any] = {"object_key": object_key, "digest": digest}
    if training_metrics is not None:
        values["training_metrics"] = training_metrics
    session.execute(sa.update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(**values))


def set_checkpoint_status(session: Session, checkpoint_id: int, status: str) -> None:
    values: dict[str, Any] = {"status": status}
    if status == "promoted":
        values["promoted_at"] = sa.func.coalesce(Checkpoint.promoted_at, sa.func.now())
    session.execute(sa.update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(**values))


def last_promoted(session: Session, run_id: int, before_index: int, peer: int = 0) -> Checkpoint:
    """The newest promoted checkpoint of rounds before ``before_index``, else the base (of
    ``peer``: a round's peers are promoted or rejected together with its model)."""
    promoted = session.execute(
        sa.select(Checkpoint)
        .join(Round, Round.id == Checkpoint.round_id)
        .where(
            Checkpoint.run_id == run_id,
            Checkpoint.peer == peer,
            Checkpoint.status == "promoted",
            Round.index < before_index,
        )
        .order_by(Round.index.desc())
        .limit(1)
    ).scalar_one_or_none()
    return promoted or base_checkpoint(session, run_id, peer)


def base_checkpoint(session: Session, run_id: int, peer: int = 0) -> Checkpoint:
    return session.execute(
        sa.select(Checkpoint).where(
            Checkpoint.run_id == run_id, Checkpoint.round_id.is_(None), Checkpoint.peer == peer
        )
    ).scalar_one()


def round_checkpoints(session: Session, round_id: int) -> list[Checkpoint]:
    """A round's trained checkpoints: its model first, then its peers."""
    return list(
        session.execute(
            sa.select(Checkpoint).where(Checkpoint.round_id == round_id).order_by(Checkpoint.peer)
        ).scalars()
    )


def link_training_data(
    session: Session, checkpoint_id: int, shares: Sequence[tuple[int, float]]
) -> None:
    if not shares:
        return
    session.execute(
        insert(CheckpointDataset)
        .values([{"checkpoint_id": checkpoint_id, "dataset_id": d, "share": s} for d, s in shares])
        .on_conflict_do_nothing()
    )


# --- datasets -----------------------------------------------------------------------------


def ensure_dataset(
    session: Session,
    *,
    run_id: int,
    round_id: int | None,
    name: str,
    kind: str,
    recipe: str | None,
    recipe_config: dict[str, Any] | None,
    digest: str,
    object_key: str,
    row_count: int,
    stats: dict[str, Any],
    members: Iterable[dict[str, Any]],
) -> int:
    """A dataset row and its members (dicts with position, sample_id, rejected_sample_id,
    prompt_id, label), written once."""
    session.execute(
        insert(Dataset)
        .values(
            run_id=run_id,
            round_id=round_id,
            name=name,
            kind=kind,
            recipe=recipe,
            recipe_config=recipe_config,
            digest=digest,
            object_key=object_key,
            row_count=row_count,
            stats=stats,
        )
        .on_conflict_do_nothing(constraint="uq_datasets_run_id_round_id_name")
    )
    round_clause = Dataset.round_id.is_(None) if round_id is None else Dataset.round_id == round_id
    dataset_id = session.execute(
        sa.select(Dataset.id).where(Dataset.run_id == run_id, round_clause, Dataset.name == name)
    ).scalar_one()
    rows = [{"dataset_id": dataset_id, **m} for m in members]
    for start in range(0, len(rows), 5000):
        session.execute(
            insert(DatasetMember)
            .values(rows[start : start + 5000])
            .on_conflict_do_nothing(constraint="uq_dataset_members_dataset_id_position")
        )
    return dataset_id


def round_datasets(session: Session, run_id: int, before_index: int) -> list[Dataset]:
    """Datasets of earlier rounds of the run (for replay), oldest first."""
    return list(
        session.execute(
            sa.select(Dataset)
            .join(Round, Round.id == Dataset.round_id)
            .where(Dataset.run_id == run_id, Round.index < before_index, Dataset.kind != "eval")
            .order_by(Round.index)
        ).scalars()
    )


# --- evaluations --------------------------------------------------------------------------


def ensure_evaluation(
    session: Session,
    *,
    checkpoint_id: int,
    round_id: int | None,
    eval_set: str,
    metrics: dict[str, Any],
    primary_metric: str,
    primary_value: float,
    results: Iterable[dict[str, Any]],
) -> int:
    session.execute(
        insert(Evaluation)
        .values(
            checkpoint_id=checkpoint_id,
            round_id=round_id,
            eval_set=eval_set,
            metrics=metrics,
            primary_metric=primary_metric,
            primary_value=primary_value,
        )
        .on_conflict_do_nothing(constraint="uq_evaluations_checkpoint_id_eval_set")
    )
    evaluation_id = session.execute(
        sa.select(Evaluation.id).where(
            Evaluation.checkpoint_id == checkpoint_id, Evaluation.eval_set == eval_set
        )
    ).scalar_one()
    rows = [{"evaluation_id": evaluation_id, **r} for r in results]
    if rows:
        session.execute(
            insert(EvaluationResult)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_evaluation_results_evaluation_id_prompt_id")
        )
    return evaluation_id


def evaluation_of(session: Session, checkpoint_id: int, eval_set: str) -> Evaluation | None:
    return session.execute(
        sa.select(Evaluation).where(
            Evaluation.checkpoint_id == checkpoint_id, Evaluation.eval_set == eval_set
        )
    ).scalar_one_or_none()


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
