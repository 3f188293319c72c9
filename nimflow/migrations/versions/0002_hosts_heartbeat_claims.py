"""Who ran what (run.host, taskrun.host/pid), run heartbeats, and claims on cache keys.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("heartbeat_at", sa.Float(), nullable=True))
    op.add_column("run", sa.Column("host", sa.String(), nullable=True))
    op.add_column("taskrun", sa.Column("host", sa.String(), nullable=True))
    op.add_column("taskrun", sa.Column("pid", sa.Integer(), nullable=True))
    op.create_table(
        "claim",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_claim_owner", "claim", ["owner"])
    op.create_index("ix_claim_expires_at", "claim", ["expires_at"])
