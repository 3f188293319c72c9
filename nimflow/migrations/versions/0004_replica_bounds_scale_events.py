"""Autoscaling: each replica row keeps its actor's bounds and scale-down delay (for the janitor),
and scaleevent records every change of an actor's replica count.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("actorreplica", sa.Column("min_replicas", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("actorreplica", sa.Column("max_replicas", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "actorreplica", sa.Column("scaledown_seconds", sa.Float(), nullable=False, server_default="0")
    )
    op.create_table(
        "scaleevent",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("from_count", sa.Integer(), nullable=False),
        sa.Column("to_count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
    )
    op.create_index("ix_scaleevent_run_id", "scaleevent", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_scaleevent_run_id", table_name="scaleevent")
    op.drop_table("scaleevent")
    with op.batch_alter_table("actorreplica") as batch:
        batch.drop_column("scaledown_seconds")
        batch.drop_column("max_replicas")
        batch.drop_column("min_replicas")
