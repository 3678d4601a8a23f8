"""Tables of the session-worker's SQL store (SQLAlchemy Core on ``Base.metadata``).

Times in document tables are timezone-aware UTC (:class:`UtcDateTime`); lease and membership
times are Unix seconds (``Float``) so the conditional lease updates compare plain numbers on both
PostgreSQL and SQLite. Migration ``0002`` creates these tables, ``0003`` adds ``outbox``, ``0004``
the instance's ``push_name`` and ``qr_expires_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from wa_common.clock import naive_utc
from wa_common.schemas.wire import as_utc


class Base(DeclarativeBase):
    pass


class UtcDateTime(TypeDecorator[datetime]):
    """A ``DateTime`` that always returns aware UTC values (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return naive_utc(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value) if value is not None else None


ID = 40  # ULIDs are 26 characters; room for other id formats

instances = Table(
    "instances",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("shard", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("qr_code", Text),
    Column("webhook_url", Text),
    Column("webhook_enabled", Boolean, nullable=False, default=False),
    Column("webhook_settings", JSON, nullable=False),
    Column("device_jid", String(100)),
    Column("device_data", JSON),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_activity_at", UtcDateTime),
    Column("push_name", String(256)),  # migration 0004
    Column("qr_expires_at", UtcDateTime),  # migration 0004
    Index("ix_instances_user", "user_id", "created_at"),
    Index("ix_instances_shard", "shard"),
)

messages = Table(
    "messages",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("remote_jid", String(128), nullable=False),
    Column("from_me", Boolean, nullable=False),
    Column("message_type", String(32), nullable=False),
    Column("content", Text, nullable=False, default=""),
    Column("has_media", Boolean, nullable=False, default=False),
    Column("media_url", Text),
    Column("caption", Text),
    Column("mime_type", String(128)),
    Column("file_name", String(512)),
    Column("media_size", Integer),
    Column("status", String(20), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("status_updated_at", UtcDateTime),
    UniqueConstraint("instance_id", "message_id", name="uq_messages_instance_message"),
    Index("ix_messages_chat_time", "instance_id", "remote_jid", "timestamp"),
)

contacts = Table(
    "contacts",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("number", String(64), nullable=False),
    Column("remote_jid", String(128), nullable=False),
    Column("name", String(256)),
    Column("push_name", String(256)),
    Column("is_group", Boolean, nullable=False, default=False),
    Column("profile_picture", Text),
    Column("about", Text),
    Column("last_activity", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("instance_id", "remote_jid", name="uq_contacts_instance_jid"),
    Index("ix_contacts_instance_name", "instance_id", "is_group", "name"),
    Index("ix_contacts_instance_number", "instance_id", "number"),
)

activity = Table(
    "activity",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("action", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_activity_instance_time", "instance_id", "created_at"),
    Index("ix_activity_instance_action_time", "instance_id", "action", "created_at"),
)

recent_events = Table(
    "recent_events",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("instance_id", String(ID), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_recent_events_instance_time", "instance_id", "occurred_at"),
    Index("ix_recent_events_time", "occurred_at"),
)

# Events committed with their state change, until the broker confirms them (transactional outbox).
outbox = Table(
    "outbox",
    Base.metadata,
    Column("id", String(ID), primary_key=True),
    Column("shard", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_outbox_shard_created", "shard", "created_at"),
)

idempotency = Table(
    "idempotency",
    Base.metadata,
    Column("instance_id", String(ID), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("command", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | done
    Column("reply", JSON),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_idempotency_created", "created_at"),
)

shard_leases = Table(
    "shard_leases",
    Base.metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(200)),
    Column("epoch", Integer, nullable=False, default=0),
    Column("expires_at", Float, nullable=False, default=0.0),
)

workers = Table(
    "workers",
    Base.metadata,
    Column("id", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("sessions", Integer, nullable=False, default=0),
)
