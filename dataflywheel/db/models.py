"""Every table of the system of record, in SQLAlchemy 2 typed ORM style.

Runs in: anywhere (pure declarations). The schema itself is only ever created or changed
by Alembic (``migrations/``); a test fails the build if these models and the migrations
drift apart. ``docs/schema.md`` describes each table and the lineage it encodes.

Conventions: bigint identity keys; every insert has a natural unique key so that retried
tasks use ``INSERT ... ON CONFLICT DO NOTHING`` and change nothing; statuses are text with
named CHECK constraints (cheaper to evolve than Postgres enums); timestamps are
``timestamptz`` and end in ``_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
ROUND_STATUSES = ("pending", "running", "succeeded", "failed")
CHECKPOINT_STATUSES = ("base", "candidate", "promoted", "rejected")
DATASET_KINDS = ("sft", "preference", "eval")
SAMPLE_PURPOSES = ("train", "eval", "baseline")
SCORE_STATUSES = ("scored", "unscorable")
SHARD_STATUSES = ("pending", "running", "done", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: sa.DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


def _created_at() -> Mapped[datetime]:
    return mapped_column(server_default=sa.func.now())


class Run(Base):
    """One self-improvement run: a spec executed for N rounds."""

    __tablename__ = "runs"
    __table_args__ = (sa.CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    spec: Mapped[dict[str, Any]] = mapped_column(comment="The run spec exactly as validated.")
    spec_hash: Mapped[str] = mapped_column(sa.String(64), index=True, comment="sha256 of spec")
    status: Mapped[str] = mapped_column(sa.Text, server_default="pending")
    # An API client may retry a create; the same key returns the same run instead of a twin.
    idempotency_key: Mapped[str | None] = mapped_column(sa.Text, unique=True)
    replay_of_round_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("rounds.id", ondelete="SET NULL", use_alter=True),
        comment="Set when this run replays a past round (deterministic replay).",
    )
    prefect_flow_run_id: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    rounds: Mapped[list[Round]] = relationship(
        back_populates="run", foreign_keys="Round.run_id", order_by="Round.index"
    )


class Round(Base):
    """One generate -> verify -> select -> train -> evaluate -> promote cycle of a run."""

    __tablename__ = "rounds"
    __table_args__ = (
        # One row per round of a run: re-running the flow never creates a second round k.
        sa.UniqueConstraint("run_id", "index"),
        sa.CheckConstraint(_one_of("status", ROUND_STATUSES), name="status"),
        sa.CheckConstraint("index >= 0", name="index_nonnegative"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.Text, server_default="pending")
    seed: Mapped[int] = mapped_column(sa.BigInteger, comment="Derived from the run seed.")
    manifest: Mapped[dict[str, Any] | None] = mapped_column(
        comment="Spec hash, seeds, code and package versions, verifier versions, input digests."
    )
    manifest_digest: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="rounds", foreign_keys=[run_id])


class Prompt(Base):
    """A prompt with its reference answer or tests; identified by the hash of its content."""

    __tablename__ = "prompts"
    __table_args__ = (
        # Content addressing: loading the same prompt set twice inserts nothing new.
        sa.UniqueConstraint("content_hash"),
        sa.CheckConstraint("difficulty IS NULL OR difficulty >= 0", name="difficulty"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    content_hash: Mapped[str] = mapped_column(
        sa.String(64), comment="sha256 of (prompt_set, split, text, reference, tests, difficulty)"
    )
    text_hash: Mapped[str] = mapped_column(
        sa.String(64), index=True, comment="sha256 of text alone: finds a prompt across splits"
    )
    prompt_set: Mapped[str] = mapped_column(sa.Text, index=True)
    split: Mapped[str] = mapped_column(sa.Text, comment="train | eval | test, or a custom name")
    text: Mapped[str] = mapped_column(sa.Text)
    reference: Mapped[dict[str, Any] | None] = mapped_column(
        comment="Reference answer(s), e.g. {'answer': '42'}; null for unlabelled prompts."
    )
    tests: Mapped[str | None] = mapped_column(sa.Text, comment="Unit tests for code prompts.")
    difficulty: Mapped[int | None] = mapped_column(sa.Integer)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default="{}")
    created_at: Mapped[datetime] = _created_at()


class Checkpoint(Base):
    """Model weights: a run's base model (round_id NULL) or the model a round trained."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        # One base checkpoint per run and one trained checkpoint per round, per peer.
        sa.UniqueConstraint("run_id", "round_id", "peer", postgresql_nulls_not_distinct=True),
        sa.CheckConstraint(_one_of("status", CHECKPOINT_STATUSES), name="status"),
        sa.CheckConstraint("peer >= 0", name="peer"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rounds.id", ondelete="CASCADE"))
    peer: Mapped[int] = mapped_column(
        sa.SmallInteger,
        server_default="0",
        comment="0: the run's model; 1+: peers trained alongside it whose samples only vote "
        "(training.peers).",
    )
    parent_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="RESTRICT"), index=True
    )
    source_uri: Mapped[str | None] = mapped_column(
        sa.Text, comment="Where a base model came from: a path, a store URI or builtin:<name>."
    )
    object_key: Mapped[str | None] = mapped_column(
        sa.Text, comment="Store key of the weights' tree manifest; set once the upload is done."
    )
    digest: Mapped[str | None] = mapped_column(
        sa.String(64), index=True, comment="sha256 of the tree manifest (identical weights match)"
    )
    training_config: Mapped[dict[str, Any] | None]
    training_metrics: Mapped[dict[str, Any] | None] = mapped_column(
        comment="e.g. final loss, steps, tokens seen."
    )
    status: Mapped[str] = mapped_column(sa.Text, server_default="candidate")
    created_at: Mapped[datetime] = _created_at()
    promoted_at: Mapped[datetime | None]

    parent: Mapped[Checkpoint | None] = relationship(remote_side=[id])
    datasets: Mapped[list[Dataset]] = relationship(secondary="checkpoint_datasets")


class Dataset(Base):
    """A selected training set (sft / preference) or a registered eval set, stored as a file."""

    __tablename__ = "datasets"
    __table_args__ = (
        # One dataset of a given name per round (round_id NULL: run-level, e.g. eval sets).
        sa.UniqueConstraint("run_id", "round_id", "name", postgresql_nulls_not_distinct=True),
        sa.CheckConstraint(_one_of("kind", DATASET_KINDS), name="kind"),
        sa.CheckConstraint("row_count >= 0", name="row_count"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rounds.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.Text)
    recipe: Mapped[str | None] = mapped_column(sa.Text, comment="e.g. rejection_sampling")
    recipe_config: Mapped[dict[str, Any] | None]
    digest: Mapped[str] = mapped_column(sa.String(64), comment="sha256 of the dataset file")
    object_key: Mapped[str] = mapped_column(sa.Text)
    row_count: Mapped[int] = mapped_column(sa.Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(
        server_default="{}", comment="Yield per filter, diversity, contamination counts."
    )
    created_at: Mapped[datetime] = _created_at()


class DatasetMember(Base):
    """One row of a dataset: a sample (sft), a chosen/rejected pair, or a prompt (eval)."""

    __tablename__ = "dataset_members"
    __table_args__ = (
        sa.UniqueConstraint("dataset_id", "position"),
        sa.CheckConstraint(
            "sample_id IS NOT NULL OR prompt_id IS NOT NULL", name="member_references_something"
        ),
        sa.CheckConstraint(
            "rejected_sample_id IS NULL OR sample_id IS NOT NULL", name="pair_has_chosen"
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer, comment="Row number in the dataset file.")
    sample_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("samples.id", ondelete="RESTRICT"),
        index=True,
        comment="The kept sample (sft) or the chosen one (preference).",
    )
    rejected_sample_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("samples.id", ondelete="RESTRICT"), index=True
    )
    prompt_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("prompts.id", ondelete="RESTRICT"), index=True
    )
    label: Mapped[str | None] = mapped_column(
        sa.Text, comment="Pseudo-label used for training (majority vote), if not the reference."
    )


class CheckpointDataset(Base):
    """Which datasets a checkpoint was trained on (several with replay of earlier rounds)."""

    __tablename__ = "checkpoint_datasets"

    checkpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[int] = mapped_column(
        sa.ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    share: Mapped[float | None] = mapped_column(
        sa.Float, comment="Fraction of the training mix drawn from this dataset."
    )


class Sample(Base):
    """One completion: which round, prompt and checkpoint produced it, and how."""

    __tablename__ = "samples"
    __table_args__ = (
        # Retried generation shards insert nothing twice.
        sa.UniqueConstraint("round_id", "purpose", "prompt_id", "sample_index"),
        sa.CheckConstraint(_one_of("purpose", SAMPLE_PURPOSES), name="purpose"),
        sa.Index("ix_samples_checkpoint_id", "checkpoint_id"),
        sa.Index("ix_samples_prompt_id", "prompt_id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    round_id: Mapped[int] = mapped_column(sa.ForeignKey("rounds.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(sa.ForeignKey("prompts.id", ondelete="RESTRICT"))
    checkpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="RESTRICT"),
        comment="The checkpoint that generated this sample.",
    )
    purpose: Mapped[str] = mapped_column(
        sa.Text,
        server_default="train",
        comment="train: for selection; eval: evaluates the round's candidate; baseline: "
        "evaluates the run's base model",
    )
    sample_index: Mapped[int] = mapped_column(sa.Integer)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    sampling_params: Mapped[dict[str, Any]] = mapped_column(
        comment="temperature, top_p, max_tokens, backend, dtype, ..."
    )
    text: Mapped[str] = mapped_column(sa.Text)
    prompt_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    finish_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()


class Score(Base):
    """A verifier's verdict on a sample; unscorable samples are recorded, never dropped."""

    __tablename__ = "scores"
    __table_args__ = (
        # One score per sample and verifier version: re-scoring with the same code is a no-op,
        # a new verifier version adds rows beside the old ones.
        sa.UniqueConstraint("sample_id", "verifier", "verifier_version"),
        sa.CheckConstraint(_one_of("status", SCORE_STATUSES), name="status"),
        sa.CheckConstraint(
            "status = 'scored' OR (passed IS NULL AND value IS NULL)", name="unscorable_is_null"
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    sample_id: Mapped[int] = mapped_column(sa.ForeignKey("samples.id", ondelete="CASCADE"))
    verifier: Mapped[str] = mapped_column(sa.Text, comment="Verifier name, e.g. exact_answer.")
    verifier_version: Mapped[str] = mapped_column(
        sa.Text, comment="Hash of the verifier's code and configuration."
    )
    value: Mapped[float | None] = mapped_column(sa.Float)
    passed: Mapped[bool | None] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.Text, server_default="scored")
    reason: Mapped[str | None] = mapped_column(sa.Text, comment="e.g. no_answer, mismatch")
    details: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[datetime] = _created_at()


class Evaluation(Base):
    """A checkpoint's metrics on an eval set."""

    __tablename__ = "evaluations"
    __table_args__ = (sa.UniqueConstraint("checkpoint_id", "eval_set"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("checkpoints.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rounds.id", ondelete="CASCADE"))
    eval_set: Mapped[str] = mapped_column(sa.Text)
    dataset_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("datasets.id", ondelete="SET NULL")
    )
    metrics: Mapped[dict[str, Any]] = mapped_column(
        comment="e.g. accuracy, pass@k, accuracy per difficulty."
    )
    primary_metric: Mapped[str] = mapped_column(sa.Text)
    primary_value: Mapped[float] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = _created_at()


class EvaluationResult(Base):
    """One prompt's result within an evaluation."""

    __tablename__ = "evaluation_results"
    __table_args__ = (sa.UniqueConstraint("evaluation_id", "prompt_id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluations.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(
        sa.ForeignKey("prompts.id", ondelete="RESTRICT"), index=True
    )
    passed: Mapped[bool | None] = mapped_column(sa.Boolean)
    value: Mapped[float | None] = mapped_column(sa.Float)
    details: Mapped[dict[str, Any]] = mapped_column(
        server_default="{}", comment="e.g. sample ids, n correct of k."
    )


class StageShard(Base):
    """The stage/shard ledger: what work a round has, which is done, where it ran."""

    __tablename__ = "stage_shards"
    __table_args__ = (
        # Deterministic shards: a resumed round finds its own rows and skips finished ones.
        sa.UniqueConstraint("round_id", "stage", "shard_index"),
        sa.CheckConstraint(_one_of("status", SHARD_STATUSES), name="status"),
        sa.CheckConstraint("attempt >= 0", name="attempt"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    round_id: Mapped[int] = mapped_column(sa.ForeignKey("rounds.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(
        sa.Text, comment="generate | verify | select | train | evaluate | promote"
    )
    shard_index: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.Text, server_default="pending")
    attempt: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    worker_node: Mapped[str | None] = mapped_column(sa.Text, comment="Ray node id that ran it.")
    input_digest: Mapped[str | None] = mapped_column(sa.String(64))
    output_key: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ApiKey(Base):
    """A bearer key of the HTTP API, stored as the sha256 of the token (never the token)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # Lookup by hash on every request; a token hashes to one row.
        sa.UniqueConstraint("token_hash"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, comment="Who or what holds the key.")
    prefix: Mapped[str] = mapped_column(
        sa.Text, comment="The token's first characters, shown in listings to tell keys apart."
    )
    token_hash: Mapped[str] = mapped_column(
        sa.String(64), comment="sha256 hex of the token (a high-entropy random secret)."
    )
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None] = mapped_column(
        comment="Set when revoked: the key no longer authenticates."
    )
