"""Session-worker store: instances, messages, contacts, activity, recent events, idempotency,
shard leases and worker membership."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

ID = 40


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _instance_row_ids() -> tuple[sa.Column, sa.Column]:
    """The first columns of a table of per-instance rows: the row's id and its instance's."""
    return (
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("instance_id", sa.String(ID), nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("qr_code", sa.Text()),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("webhook_enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_settings", sa.JSON(), nullable=False),
        sa.Column("device_jid", sa.String(100)),
        sa.Column("device_data", sa.JSON()),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("last_activity_at", True),
    )
    op.create_index("ix_instances_user", "instances", ["user_id", "created_at"])
    op.create_index("ix_instances_shard", "instances", ["shard"])

    op.create_table(
        "messages",
        *_instance_row_ids(),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("remote_jid", sa.String(128), nullable=False),
        sa.Column("from_me", sa.Boolean(), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("has_media", sa.Boolean(), nullable=False),
        sa.Column("media_url", sa.Text()),
        sa.Column("caption", sa.Text()),
        sa.Column("mime_type", sa.String(128)),
        sa.Column("file_name", sa.String(512)),
        sa.Column("media_size", sa.Integer()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _ts("timestamp"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("status_updated_at", True),
        sa.UniqueConstraint("instance_id", "message_id", name="uq_messages_instance_message"),
    )
    op.create_index("ix_messages_chat_time", "messages", ["instance_id", "remote_jid", "timestamp"])

    op.create_table(
        "contacts",
        *_instance_row_ids(),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("remote_jid", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("push_name", sa.String(256)),
        sa.Column("is_group", sa.Boolean(), nullable=False),
        sa.Column("profile_picture", sa.Text()),
        sa.Column("about", sa.Text()),
        _ts("last_activity", True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("instance_id", "remote_jid", name="uq_contacts_instance_jid"),
    )
    op.create_index("ix_contacts_instance_name", "contacts", ["instance_id", "is_group", "name"])
    op.create_index("ix_contacts_instance_number", "contacts", ["instance_id", "number"])

    op.create_table(
        "activity",
        *_instance_row_ids(),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_activity_instance_time", "activity", ["instance_id", "created_at"])
    op.create_index("ix_activity_instance_action_time", "activity", ["instance_id", "action", "created_at"])

    op.create_table(
        "recent_events",
        *_instance_row_ids(),
        sa.Column("type", sa.String(64), nullable=False),
        _ts("occurred_at"),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_recent_events_instance_time", "recent_events", ["instance_id", "occurred_at"])
    op.create_index("ix_recent_events_time", "recent_events", ["occurred_at"])

    op.create_table(
        "idempotency",
        sa.Column("instance_id", sa.String(ID), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reply", sa.JSON()),
        _ts("created_at"),
    )
    op.create_index("ix_idempotency_created", "idempotency", ["created_at"])

    op.create_table(
        "shard_leases",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "workers",
        "shard_leases",
        "idempotency",
        "recent_events",
        "activity",
        "contacts",
        "messages",
        "instances",
    ):
        op.drop_table(table)
