"""Lineage schema: runs, rounds, prompts, samples, scores, datasets, checkpoints,
evaluations and the stage/shard ledger (see docs/schema.md).

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:30:14.073960
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "content_hash",
            sa.String(length=64),
            nullable=False,
            comment="sha256 of (prompt_set, split, text, reference, tests, difficulty)",
        ),
        sa.Column(
            "text_hash",
            sa.String(length=64),
            nullable=False,
            comment="sha256 of text alone: finds a prompt across splits",
        ),
        sa.Column("prompt_set", sa.Text(), nullable=False),
        sa.Column(
            "split", sa.Text(), nullable=False, comment="train | eval | test, or a custom name"
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "reference",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="Reference answer(s), e.g. {'answer': '42'}; null for unlabelled prompts.",
        ),
        sa.Column("tests", sa.Text(), nullable=True, comment="Unit tests for code prompts."),
        sa.Column("difficulty", sa.Integer(), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "difficulty IS NULL OR difficulty >= 0", name=op.f("ck_prompts_difficulty")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_prompts_content_hash")),
    )
    op.create_index(op.f("ix_prompts_prompt_set"), "prompts", ["prompt_set"], unique=False)
    op.create_index(op.f("ix_prompts_text_hash"), "prompts", ["text_hash"], unique=False)
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "spec",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="The run spec exactly as validated.",
        ),
        sa.Column("spec_hash", sa.String(length=64), nullable=False, comment="sha256 of spec"),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column(
            "replay_of_round_id",
            sa.BigInteger(),
            nullable=True,
            comment="Set when this run replays a past round (deterministic replay).",
        ),
        sa.Column("prefect_flow_run_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_runs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_runs_idempotency_key")),
    )
    op.create_index(op.f("ix_runs_spec_hash"), "runs", ["spec_hash"], unique=False)
    op.create_table(
        "rounds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False, comment="Derived from the run seed."),
        sa.Column(
            "manifest",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="Spec hash, seeds, code and package versions, verifier versions, input digests.",
        ),
        sa.Column("manifest_digest", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed')", name=op.f("ck_rounds_status")
        ),
        sa.CheckConstraint("index >= 0", name=op.f("ck_rounds_index_nonnegative")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_rounds_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("run_id", "index", name=op.f("uq_rounds_run_id_index")),
    )
    # runs <-> rounds reference each other; the runs -> rounds key is added once both exist.
    op.create_foreign_key(
        op.f("fk_runs_replay_of_round_id_rounds"),
        "runs",
        "rounds",
        ["replay_of_round_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=True),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "source_uri",
            sa.Text(),
            nullable=True,
            comment="Where a base model came from: a path, a store URI or builtin:<name>.",
        ),
        sa.Column(
            "object_key",
            sa.Text(),
            nullable=True,
            comment="Store key of the weights' tree manifest; set once the upload is done.",
        ),
        sa.Column(
            "digest",
            sa.String(length=64),
            nullable=True,
            comment="sha256 of the tree manifest (identical weights match)",
        ),
        sa.Column("training_config", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "training_metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="e.g. final loss, steps, tokens seen.",
        ),
        sa.Column("status", sa.Text(), server_default="candidate", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('base', 'candidate', 'promoted', 'rejected')",
            name=op.f("ck_checkpoints_status"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["checkpoints.id"],
            name=op.f("fk_checkpoints_parent_id_checkpoints"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_checkpoints_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_checkpoints_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint(
            "run_id",
            "round_id",
            name=op.f("uq_checkpoints_run_id_round_id"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_checkpoints_digest"), "checkpoints", ["digest"], unique=False)
    op.create_index(op.f("ix_checkpoints_parent_id"), "checkpoints", ["parent_id"], unique=False)
    op.create_table(
        "datasets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recipe", sa.Text(), nullable=True, comment="e.g. rejection_sampling"),
        sa.Column("recipe_config", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "digest", sa.String(length=64), nullable=False, comment="sha256 of the dataset file"
        ),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column(
            "stats",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Yield per filter, diversity, contamination counts.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('sft', 'preference', 'eval')", name=op.f("ck_datasets_kind")),
        sa.CheckConstraint("row_count >= 0", name=op.f("ck_datasets_row_count")),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_datasets_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_datasets_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint(
            "run_id",
            "round_id",
            "name",
            name=op.f("uq_datasets_run_id_round_id_name"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_table(
        "stage_shards",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "stage",
            sa.Text(),
            nullable=False,
            comment="generate | verify | select | train | evaluate | promote",
        ),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker_node", sa.Text(), nullable=True, comment="Ray node id that ran it."),
        sa.Column("input_digest", sa.String(length=64), nullable=True),
        sa.Column("output_key", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed')",
            name=op.f("ck_stage_shards_status"),
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_stage_shards_attempt")),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_stage_shards_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_shards")),
        sa.UniqueConstraint(
            "round_id",
            "stage",
            "shard_index",
            name=op.f("uq_stage_shards_round_id_stage_shard_index"),
        ),
    )
    op.create_table(
        "checkpoint_datasets",
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "share",
            sa.Float(),
            nullable=True,
            comment="Fraction of the training mix drawn from this dataset.",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_checkpoint_datasets_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_checkpoint_datasets_dataset_id_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("checkpoint_id", "dataset_id", name=op.f("pk_checkpoint_datasets")),
    )
    op.create_index(
        op.f("ix_checkpoint_datasets_dataset_id"),
        "checkpoint_datasets",
        ["dataset_id"],
        unique=False,
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=True),
        sa.Column("eval_set", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="e.g. accuracy, pass@k, accuracy per difficulty.",
        ),
        sa.Column("primary_metric", sa.Text(), nullable=False),
        sa.Column("primary_value", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_evaluations_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_evaluations_dataset_id_datasets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_evaluations_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint(
            "checkpoint_id", "eval_set", name=op.f("uq_evaluations_checkpoint_id_eval_set")
        ),
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "checkpoint_id",
            sa.BigInteger(),
            nullable=False,
            comment="The checkpoint that generated this sample.",
        ),
        sa.Column(
            "purpose",
            sa.Text(),
            server_default="train",
            nullable=False,
            comment="train: for selection; eval: evaluates the round's candidate; baseline: evaluates the run's base model",
        ),
        sa.Column("sample_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column(
            "sampling_params",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="temperature, top_p, max_tokens, backend, dtype, ...",
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("finish_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "purpose IN ('train', 'eval', 'baseline')", name=op.f("ck_samples_purpose")
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_samples_checkpoint_id_checkpoints"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_samples_prompt_id_prompts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_samples_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_samples")),
        sa.UniqueConstraint(
            "round_id",
            "purpose",
            "prompt_id",
            "sample_index",
            name=op.f("uq_samples_round_id_purpose_prompt_id_sample_index"),
        ),
    )
    op.create_index("ix_samples_checkpoint_id", "samples", ["checkpoint_id"], unique=False)
    op.create_index("ix_samples_prompt_id", "samples", ["prompt_id"], unique=False)
    op.create_table(
        "dataset_members",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="Row number in the dataset file."
        ),
        sa.Column(
            "sample_id",
            sa.BigInteger(),
            nullable=True,
            comment="The kept sample (sft) or the chosen one (preference).",
        ),
        sa.Column("rejected_sample_id", sa.BigInteger(), nullable=True),
        sa.Column("prompt_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "label",
            sa.Text(),
            nullable=True,
            comment="Pseudo-label used for training (majority vote), if not the reference.",
        ),
        sa.CheckConstraint(
            "rejected_sample_id IS NULL OR sample_id IS NOT NULL",
            name=op.f("ck_dataset_members_pair_has_chosen"),
        ),
        sa.CheckConstraint(
            "sample_id IS NOT NULL OR prompt_id IS NOT NULL",
            name=op.f("ck_dataset_members_member_references_something"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_members_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_dataset_members_prompt_id_prompts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["rejected_sample_id"],
            ["samples.id"],
            name=op.f("fk_dataset_members_rejected_sample_id_samples"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"],
            ["samples.id"],
            name=op.f("fk_dataset_members_sample_id_samples"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_members")),
        sa.UniqueConstraint(
            "dataset_id", "position", name=op.f("uq_dataset_members_dataset_id_position")
        ),
    )
    op.create_index(
        op.f("ix_dataset_members_prompt_id"), "dataset_members", ["prompt_id"], unique=False
    )
    op.create_index(
        op.f("ix_dataset_members_rejected_sample_id"),
        "dataset_members",
        ["rejected_sample_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_dataset_members_sample_id"), "dataset_members", ["sample_id"], unique=False
    )
    op.create_table(
        "evaluation_results",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="e.g. sample ids, n correct of k.",
        ),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
            name=op.f("fk_evaluation_results_evaluation_id_evaluations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_evaluation_results_prompt_id_prompts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_results")),
        sa.UniqueConstraint(
            "evaluation_id", "prompt_id", name=op.f("uq_evaluation_results_evaluation_id_prompt_id")
        ),
    )
    op.create_index(
        op.f("ix_evaluation_results_prompt_id"), "evaluation_results", ["prompt_id"], unique=False
    )
    op.create_table(
        "scores",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sample_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "verifier", sa.Text(), nullable=False, comment="Verifier name, e.g. exact_answer."
        ),
        sa.Column(
            "verifier_version",
            sa.Text(),
            nullable=False,
            comment="Hash of the verifier's code and configuration.",
        ),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("status", sa.Text(), server_default="scored", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True, comment="e.g. no_answer, mismatch"),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status = 'scored' OR (passed IS NULL AND value IS NULL)",
            name=op.f("ck_scores_unscorable_is_null"),
        ),
        sa.CheckConstraint("status IN ('scored', 'unscorable')", name=op.f("ck_scores_status")),
        sa.ForeignKeyConstraint(
            ["sample_id"],
            ["samples.id"],
            name=op.f("fk_scores_sample_id_samples"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
        sa.UniqueConstraint(
            "sample_id",
            "verifier",
            "verifier_version",
            name=op.f("uq_scores_sample_id_verifier_verifier_version"),
        ),
    )


def downgrade() -> None:
    op.drop_table("scores")
    op.drop_index(op.f("ix_evaluation_results_prompt_id"), table_name="evaluation_results")
    op.drop_table("evaluation_results")
    op.drop_index(op.f("ix_dataset_members_sample_id"), table_name="dataset_members")
    op.drop_index(op.f("ix_dataset_members_rejected_sample_id"), table_name="dataset_members")
    op.drop_index(op.f("ix_dataset_members_prompt_id"), table_name="dataset_members")
    op.drop_table("dataset_members")
    op.drop_index("ix_samples_prompt_id", table_name="samples")
    op.drop_index("ix_samples_checkpoint_id", table_name="samples")
    op.drop_table("samples")
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_checkpoint_datasets_dataset_id"), table_name="checkpoint_datasets")
    op.drop_table("checkpoint_datasets")
    op.drop_table("stage_shards")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_checkpoints_parent_id"), table_name="checkpoints")
    op.drop_index(op.f("ix_checkpoints_digest"), table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_constraint(op.f("fk_runs_replay_of_round_id_rounds"), "runs", type_="foreignkey")
    op.drop_table("rounds")
    op.drop_index(op.f("ix_runs_spec_hash"), table_name="runs")
    op.drop_table("runs")
    op.drop_index(op.f("ix_prompts_text_hash"), table_name="prompts")
    op.drop_index(op.f("ix_prompts_prompt_set"), table_name="prompts")
    op.drop_table("prompts")
