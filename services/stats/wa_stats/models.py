"""SQLAlchemy models of the stats store (tables prefixed ``stats_``).

- ``stats_usage_daily``: counters per user, instance and UTC day (``instance_id`` is ``""`` for
  API calls not tied to an instance).
- ``stats_user_daily``: per user and UTC day, the totals that daily limits compare against
  (``messages_sent``, ``api_calls``); one row per user/day so a crossing is detected exactly.
- ``stats_processed_events``: ids of events already counted (idempotency), pruned after
  ``STATS_DEDUP_RETENTION_DAYS``.
- ``stats_instances`` / ``stats_users``: replicas of instance owners, names, connection state, and
  of users (from ``instance.*``, ``connected``/``disconnected`` and ``user.*`` events).
- ``stats_limits``: per-user limits (``NULL`` = unlimited).
- ``stats_limit_events``: the outbox of ``limit_exceeded`` events, one row per user, limit and
  period (the unique key makes "one event per limit per period" hold across replicas).

Timestamps are naive UTC ``DateTime`` values (the same on PostgreSQL and SQLite).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(64)


class Base(DeclarativeBase):
    pass


def _counter() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class UsageDaily(Base):
    __tablename__ = "stats_usage_daily"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    messages_sent: Mapped[int] = _counter()
    messages_received: Mapped[int] = _counter()
    media_sent: Mapped[int] = _counter()
    media_received: Mapped[int] = _counter()
    total_media_size: Mapped[int] = _counter()
    api_calls: Mapped[int] = _counter()
    webhook_sent: Mapped[int] = _counter()

    __table_args__ = (
        Index("ix_stats_usage_daily_instance_day", "instance_id", "day"),
        Index("ix_stats_usage_daily_day", "day"),
    )


class UserDaily(Base):
    __tablename__ = "stats_user_daily"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    messages_sent: Mapped[int] = _counter()
    api_calls: Mapped[int] = _counter()


class ProcessedEvent(Base):
    __tablename__ = "stats_processed_events"

    event_id: Mapped[str] = mapped_column(ID, primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, index=True)


class InstanceRow(Base):
    __tablename__ = "stats_instances"

    instance_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="", server_default="")
    snapshot_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    connected: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="0")
    status_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="0")


class UserRow(Base):
    __tablename__ = "stats_users"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default="1")
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user", server_default="user")
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="0")
    changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class LimitRow(Base):
    __tablename__ = "stats_limits"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    max_messages_sent: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_api_calls: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class LimitEventRow(Base):
    __tablename__ = "stats_limit_events"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    limit_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    event_id: Mapped[str] = mapped_column(ID, nullable=False, unique=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
