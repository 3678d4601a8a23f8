"""SQLAlchemy models of the webhooks store.

Points in time are stored as Unix epoch milliseconds (``BigInteger``, UTC: cheap to compare the
same way on PostgreSQL and SQLite) and read and written as aware UTC ``datetime`` values
(:class:`EpochMs`), so milliseconds never leave the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Dialect, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from wa_common.clock import from_unix_ms, to_unix_ms
from wa_common.schemas.status import DeliveryStatus
from wa_common.schemas.wire import as_utc


class EpochMs(TypeDecorator[datetime]):
    """A ``BigInteger`` of Unix epoch milliseconds, aware UTC ``datetime`` in code (a naive
    value is taken as UTC; sub-millisecond precision is dropped)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return to_unix_ms(as_utc(value)) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return from_unix_ms(int(value)) if value is not None else None


class Base(DeclarativeBase):
    pass


class Endpoint(Base):
    """The replica of one instance's webhook settings (from ``instance.created/updated``).

    ``deleted`` is a tombstone (``instance.deleted``) so a late ``instance.updated`` cannot bring
    the instance back. ``updated_at`` is the snapshot's ``updatedAt`` (ISO 8601); newer wins.
    ``retry_interval_ms`` is the reference's ``retryInterval`` (a duration in milliseconds).
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

    ``body`` is the exact request body (canonical JSON, UTF-8). ``status``: a
    :class:`~wa_common.schemas.status.DeliveryStatus`. A pending row is due at
    ``next_attempt_at``; a replica that claims it sets ``locked_until``/``lock_token`` (a lease)
    and only that token may record the attempt.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    next_attempt_at: Mapped[datetime] = mapped_column(EpochMs)
    locked_until: Mapped[datetime | None] = mapped_column(EpochMs)
    lock_token: Mapped[str | None] = mapped_column(String(26))
    occurred_at: Mapped[datetime] = mapped_column(EpochMs)
    created_at: Mapped[datetime] = mapped_column(EpochMs)
    finished_at: Mapped[datetime | None] = mapped_column(EpochMs)
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
    started_at: Mapped[datetime] = mapped_column(EpochMs)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
