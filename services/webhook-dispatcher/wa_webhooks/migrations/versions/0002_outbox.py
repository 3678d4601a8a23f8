"""Webhook settings replica, delivery outbox and attempt log."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

ID = sa.String(64)  # instance, user and event ids from other services
ULID = sa.String(26)  # this store's own ids (``wa_common.ids.new_id``)


def _ms(name: str, nullable: bool = False) -> sa.Column:
    """A time as Unix epoch milliseconds."""
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("instance_id", ID, primary_key=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("notify_received", sa.Boolean(), nullable=False),
        sa.Column("notify_sent", sa.Boolean(), nullable=False),
        sa.Column("notify_delivery", sa.Boolean(), nullable=False),
        sa.Column("notify_read", sa.Boolean(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("retry_interval_ms", sa.Integer(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_webhook_endpoints_user_id", "webhook_endpoints", ["user_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ULID, primary_key=True),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        _ms("next_attempt_at"),
        _ms("locked_until", nullable=True),
        sa.Column("lock_token", ULID, nullable=True),
        _ms("occurred_at"),
        _ms("created_at"),
        _ms("finished_at", nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("redelivery_of", ULID, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_instance", "webhook_deliveries", ["instance_id", "id"])
    op.create_index(
        "uq_webhook_deliveries_event_instance",
        "webhook_deliveries",
        ["event_id", "instance_id"],
        unique=True,
        postgresql_where=sa.text("redelivery_of IS NULL"),
        sqlite_where=sa.text("redelivery_of IS NULL"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            ULID,
            sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        _ms("started_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
