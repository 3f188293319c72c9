"""The GPUs each actor replica holds (actorreplica.gpus), so replicas are placed on distinct GPUs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("actorreplica", sa.Column("gpus", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("actorreplica") as batch:
        batch.drop_column("gpus")
