"""Checkpoint peers: models trained alongside the run's model whose samples only vote.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "checkpoints",
        sa.Column(
            "peer",
            sa.SmallInteger(),
            server_default="0",
            nullable=False,
            comment="0: the run's model; 1+: peers trained alongside it whose samples only "
            "vote (training.peers).",
        ),
    )
    op.create_check_constraint(op.f("ck_checkpoints_peer"), "checkpoints", "peer >= 0")
    op.drop_constraint("uq_checkpoints_run_id_round_id", "checkpoints", type_="unique")
    op.create_unique_constraint(
        op.f("uq_checkpoints_run_id_round_id_peer"),
        "checkpoints",
        ["run_id", "round_id", "peer"],
        postgresql_nulls_not_distinct=True,
    )


def downgrade() -> None:
    # Peers cannot be represented without the column, and deleting them would delete the
    # samples they wrote: refuse instead of losing data.
    peers = op.get_bind().execute(sa.text("SELECT count(*) FROM checkpoints WHERE peer > 0"))
    if peers.scalar_one():
        raise RuntimeError(
            "cannot downgrade below 0003: runs with training.peers > 1 have peer checkpoints; "
            "delete those runs first (DELETE FROM runs WHERE id IN (SELECT run_id FROM "
            "checkpoints WHERE peer > 0))"
        )
    op.drop_constraint("uq_checkpoints_run_id_round_id_peer", "checkpoints", type_="unique")
    op.create_unique_constraint(
        op.f("uq_checkpoints_run_id_round_id"),
        "checkpoints",
        ["run_id", "round_id"],
        postgresql_nulls_not_distinct=True,
    )
    op.drop_constraint(op.f("ck_checkpoints_peer"), "checkpoints", type_="check")
    op.drop_column("checkpoints", "peer")
