"""prediction results in files, and the sizes that quotas count

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("request_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("result_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("result_offset", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("result_type", sa.String(length=200), nullable=True))
        batch_op.create_index(
            "ix_predictions_model_usage",
            ["model", "status", "request_bytes", "result_bytes"],
            unique=False,
        )
        batch_op.create_index(
            "ix_predictions_actor_usage",
            ["actor", "status", "request_bytes", "result_bytes"],
            unique=False,
        )
    # Requests already kept count against the quotas like new ones; results kept so far
    # are all inline JSON.
    op.execute(sa.text("UPDATE predictions SET request_bytes = length(body)"))
    op.execute(
        sa.text(
            "UPDATE predictions SET result_type = 'application/json' WHERE status = 'succeeded'"
        )
    )


def downgrade() -> None:
    # Results kept in files are not moved back: their rows keep no result.
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_actor_usage")
        batch_op.drop_index("ix_predictions_model_usage")
        batch_op.drop_column("result_type")
        batch_op.drop_column("result_offset")
        batch_op.drop_column("result_bytes")
        batch_op.drop_column("request_bytes")
