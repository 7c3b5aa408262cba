"""replicas: one cells row per replica slot, and each deployment's scale

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A deployment's one cell becomes its replica in slot 0; one recorded before was
    # ready or on its way, and the next reconciler pass sees which.
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_constraint("uq_cells_deployment_seq", type_="unique")
        batch_op.create_index("ix_cells_deployment_seq", ["deployment_seq"], unique=False)
        batch_op.add_column(sa.Column("slot", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="ready")
        )
        batch_op.add_column(sa.Column("node", sa.String(length=200), nullable=True))

    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("desired_replicas", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("tier", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("tier")
        batch_op.drop_column("paused")
        batch_op.drop_column("desired_replicas")

    # only slot 0 can stay: one cell per deployment again
    op.execute("DELETE FROM cells WHERE slot <> 0")
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_column("node")
        batch_op.drop_column("state")
        batch_op.drop_column("slot")
        batch_op.drop_index("ix_cells_deployment_seq")
        batch_op.create_unique_constraint("uq_cells_deployment_seq", ["deployment_seq"])
