"""Transactional outbox: events committed with the state change they report until the broker
confirms them (``wa_session_worker.service.outbox``)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_outbox_shard_created", "outbox", ["shard", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_shard_created", table_name="outbox")
    op.drop_table("outbox")
