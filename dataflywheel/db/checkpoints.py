"""Reads and idempotent writes of checkpoints, the datasets they train on, and their
evaluations.

Runs in: anywhere with a session (Prefect tasks, the CLI, the API). Functions take a
``Session`` and never commit. Every insert goes through the table's natural key with
``ON CONFLICT DO NOTHING`` and then reads the row back, so calling any of them twice with the
same arguments leaves one row — the property Prefect retries and ``flywheel resume`` rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
)

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


def round_candidate(session: Session, round_id: int) -> Checkpoint | None:
    """The round's trained model (peer 0): the one evaluated and gated; None before training
    (or when nothing was selected)."""
    return session.execute(
        sa.select(Checkpoint).where(Checkpoint.round_id == round_id, Checkpoint.peer == 0)
    ).scalar_one_or_none()


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


def round_dataset(session: Session, round_id: int, name: str) -> Dataset | None:
    """The round's dataset called ``name``, if it was selected."""
    return session.execute(
        sa.select(Dataset).where(Dataset.round_id == round_id, Dataset.name == name)
    ).scalar_one_or_none()


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
