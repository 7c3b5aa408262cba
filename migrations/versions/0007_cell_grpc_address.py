"""each cell's gRPC address, recorded beside its HTTP url

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Cells recorded before have none: they serve no gRPC until they are started anew.
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grpc_address", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells", schema=None) as batch_op:
        batch_op.drop_column("grpc_address")
