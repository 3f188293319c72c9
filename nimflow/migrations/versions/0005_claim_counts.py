"""How many items of a node another run computed while this one waited (taskrun.waited), and how
many it took over from a run that let them go (taskrun.taken_over).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
# Merged after the replica-bounds revision, this becomes "0004": one line, the chain stays linear.
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("taskrun", sa.Column("waited", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("taskrun", sa.Column("taken_over", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("taskrun") as batch:
        batch.drop_column("taken_over")
        batch.drop_column("waited")
