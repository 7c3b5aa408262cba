"""lifecycle flags and crash count

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:17:05.323287
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"))

    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activation", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("restart_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("restart_requested")
        batch_op.drop_column("activation")

    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_column("crashes")
