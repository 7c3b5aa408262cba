"""asynchronous predictions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 12:38:01.076920
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("deploy_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("webhook", sa.String(length=2000), nullable=True),
        sa.Column("webhook_status", sa.String(length=200), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint("request_id", name=op.f("uq_predictions_request_id")),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_predictions_completed_at"), ["completed_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_predictions_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_status"))
        batch_op.drop_index(batch_op.f("ix_predictions_model"))
        batch_op.drop_index(batch_op.f("ix_predictions_completed_at"))

    op.drop_table("predictions")
