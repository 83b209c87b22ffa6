"""The schema's natural keys and checks on real Postgres: a retried insert changes nothing,
and a bad status never gets in.

Every table a task writes has a unique natural key, so retries use ``INSERT ... ON CONFLICT
ON CONSTRAINT <key> DO NOTHING``. Each case inserts a row, retries it with different non-key
values (nothing changes), inserts a neighbour that differs in one key column (a new row, so
the key is not wider than it should be), and shows that a plain duplicate insert fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from dataflywheel.db import models as m

# Parents every case can point at: runs 1-3, rounds 1-3 of run 1, run 1's base checkpoint and
# round 1's, two prompts, a sample, a dataset and an evaluation.
PARENTS: list[tuple[type[m.Base], list[dict[str, Any]]]] = [
    (m.Run, [dict(id=i, name="run", spec={}, spec_hash="0" * 64) for i in (1, 2, 3)]),
    (m.Round, [dict(id=i, run_id=1, index=i - 1, seed=i) for i in (1, 2, 3)]),
    (
        m.Checkpoint,
        [
            dict(id=1, run_id=1, round_id=None, parent_id=None, status="base"),
            dict(id=2, run_id=1, round_id=1, parent_id=1, status="candidate"),
        ],
    ),
    (
        m.Prompt,
        [
            dict(
                id=p,
                content_hash=f"{p:064d}",
                text_hash="t",
                prompt_set="s",
                split="train",
                text="q",
            )
            for p in (1, 2)
        ],
    ),
    (
        m.Sample,
        [
            dict(
                id=1,
                round_id=1,
                prompt_id=1,
                checkpoint_id=1,
                sample_index=0,
                seed=0,
                sampling_params={},
                text="a",
            )
        ],
    ),
    (
        m.Dataset,
        [
            dict(
                id=1,
                run_id=1,
                round_id=1,
                name="sft",
                kind="sft",
                digest="d",
                object_key="k",
                row_count=1,
            )
        ],
    ),
    (
        m.Evaluation,
        [
            dict(
                id=1,
                checkpoint_id=2,
                eval_set="e",
                metrics={},
                primary_metric="accuracy",
                primary_value=0.5,
            )
        ],
    ),
]


@pytest.fixture
def db(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as conn:
        for model, rows in PARENTS:
            conn.execute(sa.insert(model.__table__), rows)
            # Explicit ids leave the identity sequence behind; move it past them.
            table = model.__tablename__
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                )
            )
    return engine


@dataclass(frozen=True)
class Key:
    name: str
    model: type[m.Base]
    constraint: str
    row: dict[str, Any]
    retry_changes: dict[str, Any]  # non-key columns a retry might carry differently
    neighbour: dict[str, Any]  # one key column changed: must be a new row


NATURAL_KEYS = [
    Key(
        "run",
        m.Run,
        "uq_runs_idempotency_key",
        dict(name="r", spec={}, spec_hash="1" * 64, idempotency_key="req-1"),
        dict(name="retried", spec={"x": 1}),
        dict(idempotency_key="req-2"),
    ),
    Key(
        "round",
        m.Round,
        "uq_rounds_run_id_index",
        dict(run_id=1, index=5, seed=1),
        dict(seed=2),
        dict(index=6),
    ),
    Key(
        "prompt",
        m.Prompt,
        "uq_prompts_content_hash",
        dict(content_hash="c" * 64, text_hash="t", prompt_set="s", split="train", text="q"),
        dict(text="different text"),
        dict(content_hash="d" * 64),
    ),
    Key(
        "round-checkpoint",
        m.Checkpoint,
        "uq_checkpoints_run_id_round_id_peer",
        dict(run_id=1, round_id=2, parent_id=2),
        dict(status="promoted", digest="x"),
        dict(round_id=3),
    ),
    # Peers trained side by side: one checkpoint per (run, round, peer).
    Key(
        "peer-checkpoint",
        m.Checkpoint,
        "uq_checkpoints_run_id_round_id_peer",
        dict(run_id=1, round_id=2, parent_id=2, peer=1),
        dict(status="promoted", digest="x"),
        dict(peer=2),
    ),
    # round_id NULL: NULLS NOT DISTINCT makes a second base checkpoint of a run a conflict.
    Key(
        "base-checkpoint",
        m.Checkpoint,
        "uq_checkpoints_run_id_round_id_peer",
        dict(run_id=2, round_id=None, status="base", source_uri="builtin:tiny"),
        dict(source_uri="builtin:other"),
        dict(run_id=3),
    ),
    Key(
        "run-level-dataset",
        m.Dataset,
        "uq_datasets_run_id_round_id_name",
        dict(run_id=1, name="replay", kind="sft", digest="d", object_key="k", row_count=0),
        dict(digest="other", row_count=3),
        dict(round_id=2),
    ),
    Key(
        "dataset-member",
        m.DatasetMember,
        "uq_dataset_members_dataset_id_position",
        dict(dataset_id=1, position=0, sample_id=1),
        dict(label="other"),
        dict(position=1),
    ),
    Key(
        "checkpoint-dataset",
        m.CheckpointDataset,
        "pk_checkpoint_datasets",
        dict(checkpoint_id=2, dataset_id=1, share=1.0),
        dict(share=0.5),
        dict(checkpoint_id=1),
    ),
    Key(
        "sample",
        m.Sample,
        "uq_samples_round_id_purpose_prompt_id_sample_index",
        dict(
            round_id=2,
            prompt_id=1,
            checkpoint_id=2,
            sample_index=0,
            seed=0,
            sampling_params={},
            text="a",
        ),
        dict(seed=9, text="regenerated"),
        dict(purpose="eval"),
    ),
    Key(
        "score",
        m.Score,
        "uq_scores_sample_id_verifier_verifier_version",
        dict(sample_id=1, verifier="exact", verifier_version="v1", value=1.0, passed=True),
        dict(value=0.0, passed=False),
        dict(verifier_version="v2"),
    ),
    Key(
        "evaluation",
        m.Evaluation,
        "uq_evaluations_checkpoint_id_eval_set",
        dict(
            checkpoint_id=1, eval_set="e", metrics={}, primary_metric="accuracy", primary_value=0.1
        ),
        dict(primary_value=0.9),
        dict(eval_set="other"),
    ),
    Key(
        "evaluation-result",
        m.EvaluationResult,
        "uq_evaluation_results_evaluation_id_prompt_id",
        dict(evaluation_id=1, prompt_id=1, passed=True),
        dict(passed=False),
        dict(prompt_id=2),
    ),
    Key(
        "stage-shard",
        m.StageShard,
        "uq_stage_shards_round_id_stage_shard_index",
        dict(round_id=1, stage="generate", shard_index=0),
        dict(status="done", attempt=2),
        dict(stage="verify"),
    ),
]


def _insert_or_skip(conn: sa.Connection, key: Key, values: dict[str, Any]) -> int:
    """Rows inserted by ``INSERT ... ON CONFLICT ON CONSTRAINT <key> DO NOTHING``."""
    stmt = insert(key.model).values(**values).on_conflict_do_nothing(constraint=key.constraint)
    return len(conn.execute(stmt.returning(sa.literal(1))).all())


def _count(conn: sa.Connection, model: type[m.Base]) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def test_a_retried_insert_changes_nothing(db: sa.Engine) -> None:
    for key in NATURAL_KEYS:
        # One transaction per case, rolled back: cases stay independent in one database.
        with db.connect() as conn:
            _check_natural_key(conn, key)
            conn.rollback()


def _check_natural_key(conn: sa.Connection, key: Key) -> None:
    table = key.model.__table__
    before = _count(conn, key.model)
    assert _insert_or_skip(conn, key, key.row) == 1, key.name
    assert _insert_or_skip(conn, key, {**key.row, **key.retry_changes}) == 0, key.name
    assert _count(conn, key.model) == before + 1, key.name
    # The first write wins: the retry's different values were not applied.
    first = sa.and_(
        *(
            table.c[column].is_(None) if value is None else table.c[column] == value
            for column, value in key.row.items()
            if not isinstance(value, dict)
        )
    )
    assert _count_where(conn, key.model, first) == 1, key.name
    assert _insert_or_skip(conn, key, {**key.row, **key.neighbour}) == 1, key.name
    with pytest.raises(sa.exc.IntegrityError) as caught, conn.begin_nested():
        conn.execute(sa.insert(table).values(**key.row))
    assert isinstance(caught.value.orig, psycopg.errors.UniqueViolation), key.name
    assert caught.value.orig.diag.constraint_name == key.constraint, key.name


def _count_where(conn: sa.Connection, model: type[m.Base], where: sa.ColumnElement[bool]) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(model).where(where)).scalar_one()


# (model, row, constraint it breaks)
BAD_ROWS = [
    (m.Run, dict(name="r", spec={}, spec_hash="h", status="done"), "ck_runs_status"),
    (m.Round, dict(run_id=1, index=9, seed=0, status="finished"), "ck_rounds_status"),
    (m.Round, dict(run_id=1, index=-1, seed=0), "ck_rounds_index_nonnegative"),
    (m.Checkpoint, dict(run_id=1, round_id=2, status="best"), "ck_checkpoints_status"),
    (
        m.Dataset,
        dict(run_id=1, name="x", kind="rl", digest="d", object_key="k", row_count=0),
        "ck_datasets_kind",
    ),
    (
        m.Dataset,
        dict(run_id=1, name="x", kind="sft", digest="d", object_key="k", row_count=-1),
        "ck_datasets_row_count",
    ),
    (
        m.Sample,
        dict(
            round_id=1,
            prompt_id=1,
            checkpoint_id=1,
            sample_index=1,
            seed=0,
            sampling_params={},
            text="a",
            purpose="test",
        ),
        "ck_samples_purpose",
    ),
    (
        m.Score,
        dict(sample_id=1, verifier="v", verifier_version="1", status="error"),
        "ck_scores_status",
    ),
    (
        m.Score,
        dict(sample_id=1, verifier="v", verifier_version="1", status="unscorable", passed=False),
        "ck_scores_unscorable_is_null",
    ),
    (
        m.StageShard,
        dict(round_id=1, stage="generate", shard_index=0, status="ok"),
        "ck_stage_shards_status",
    ),
    (
        m.StageShard,
        dict(round_id=1, stage="generate", shard_index=0, attempt=-1),
        "ck_stage_shards_attempt",
    ),
    (
        m.Prompt,
        dict(
            content_hash="e" * 64, text_hash="t", prompt_set="s", split="x", text="q", difficulty=-1
        ),
        "ck_prompts_difficulty",
    ),
    (
        m.DatasetMember,
        dict(dataset_id=1, position=5),
        "ck_dataset_members_member_references_something",
    ),
    (
        m.DatasetMember,
        dict(dataset_id=1, position=5, prompt_id=1, rejected_sample_id=1),
        "ck_dataset_members_pair_has_chosen",
    ),
]


def test_checks_reject_bad_rows(db: sa.Engine) -> None:
    with db.connect() as conn:
        for model, row, constraint in BAD_ROWS:
            with pytest.raises(sa.exc.IntegrityError) as caught, conn.begin_nested():
                conn.execute(sa.insert(model.__table__).values(**row))
            assert isinstance(caught.value.orig, psycopg.errors.CheckViolation), constraint
            assert caught.value.orig.diag.constraint_name == constraint
        conn.rollback()


# Every value the models declare is accepted by the matching check (they cannot drift apart).
ALLOWED = [
    (m.Run, "status", m.RUN_STATUSES, lambda i: dict(name="r", spec={}, spec_hash="h")),
    (m.Round, "status", m.ROUND_STATUSES, lambda i: dict(run_id=1, index=10 + i, seed=0)),
    (m.Checkpoint, "status", m.CHECKPOINT_STATUSES, lambda i: dict(run_id=1, round_id=2)),
    (
        m.Dataset,
        "kind",
        m.DATASET_KINDS,
        lambda i: dict(run_id=1, name=f"d{i}", digest="d", object_key="k", row_count=0),
    ),
    (
        m.Sample,
        "purpose",
        m.SAMPLE_PURPOSES,
        lambda i: dict(
            round_id=2,
            prompt_id=1,
            checkpoint_id=1,
            sample_index=0,
            seed=0,
            sampling_params={},
            text="a",
        ),
    ),
    (
        m.Score,
        "status",
        m.SCORE_STATUSES,
        lambda i: dict(sample_id=1, verifier=f"v{i}", verifier_version="1"),
    ),
    (
        m.StageShard,
        "status",
        m.SHARD_STATUSES,
        lambda i: dict(round_id=1, stage="generate", shard_index=i),
    ),
]


def test_checks_accept_every_declared_value(db: sa.Engine) -> None:
    with db.connect() as conn:
        for model, column, values, make in ALLOWED:
            for i, value in enumerate(values):
                with conn.begin_nested() as savepoint:  # one at a time: some share a key
                    conn.execute(sa.insert(model.__table__).values(**make(i), **{column: value}))
                    savepoint.rollback()
        conn.rollback()
