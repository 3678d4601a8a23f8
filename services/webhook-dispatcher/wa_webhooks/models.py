"""SQLAlchemy models of the webhooks store.

Times are Unix epoch milliseconds (``BigInteger``, UTC): cheap to compare the same way on
PostgreSQL and SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Endpoint(Base):
    """The replica of one instance's webhook settings (from ``instance.created/updated``).

    ``deleted`` is a tombstone (``instance.deleted``) so a late ``instance.updated`` cannot bring
    the instance back. ``updated_at`` is the snapshot's ``updatedAt`` (ISO 8601); newer wins.
    """

    __tablename__ = "webhook_endpoints"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_received: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_sent: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_delivery: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_read: Mapped[bool] = mapped_column(Boolean, default=False)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    retry_interval_ms: Mapped[int] = mapped_column(Integer, default=60000)
    secret: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[str] = mapped_column(String(40))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Delivery(Base):
    """One event to one instance's webhook URL: the outbox row.

    ``body`` is the exact request body (canonical JSON, UTF-8). ``status``: pending, delivered,
    failed, cancelled. A pending row is due at ``next_attempt_at``; a replica that claims it sets
    ``locked_until``/``lock_token`` (a lease) and only that token may record the attempt.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    locked_until: Mapped[int | None] = mapped_column(BigInteger)
    lock_token: Mapped[str | None] = mapped_column(String(26))
    occurred_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    redelivery_of: Mapped[str | None] = mapped_column(String(26))

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_instance", "instance_id", "id"),
        Index(
            "uq_webhook_deliveries_event_instance",
            "event_id",
            "instance_id",
            unique=True,
            postgresql_where=text("redelivery_of IS NULL"),
            sqlite_where=text("redelivery_of IS NULL"),
        ),
    )


class Attempt(Base):
    """One HTTP attempt of a delivery: start time, duration, status code, outcome, error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
