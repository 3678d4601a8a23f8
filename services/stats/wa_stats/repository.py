"""SQL of the stats store (SQLAlchemy Core, async; the same statements on PostgreSQL and SQLite).

Counters are incremented with ``INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c`` (atomic
per row on both databases); writes of one event happen in one transaction together with the row
that records its id (:meth:`StatsRepository.mark_processed`). On SQLite, write transactions of
this process are serialised by a lock (SQLite has one writer at a time anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wa_stats.models import (
    InstanceRow,
    LimitEventRow,
    LimitRow,
    ProcessedEvent,
    UsageDaily,
    UserDaily,
    UserRow,
)

COUNTERS = (
    "messages_sent",
    "messages_received",
    "media_sent",
    "media_received",
    "total_media_size",
    "api_calls",
    "webhook_sent",
)
DAILY_FIELDS = ("messages_sent", "messages_received", "media_sent", "media_received")

usage_t = UsageDaily.__table__
user_daily_t = UserDaily.__table__
processed_t = ProcessedEvent.__table__
instances_t = InstanceRow.__table__
users_t = UserRow.__table__
limits_t = LimitRow.__table__
limit_events_t = LimitEventRow.__table__


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    user_id: str
    name: str
    deleted: bool
    connected: bool


@dataclass(frozen=True)
class LimitValues:
    max_messages_sent: int | None
    max_api_calls: int | None
    max_instances: int | None


@dataclass(frozen=True)
class LimitUsage:
    """A user's limits next to today's usage and the instances they own now."""

    user_id: str
    limits: LimitValues
    messages_sent: int
    api_calls: int
    instance_count: int


@dataclass(frozen=True)
class PendingLimitEvent:
    event_id: str
    body: str


def _sums(columns: tuple[str, ...]) -> list[Any]:
    return [func.coalesce(func.sum(usage_t.c[c]), 0).label(c) for c in columns]


def _counters(row: Any) -> dict[str, int]:
    return {c: int(row[c] or 0) for c in COUNTERS}


class StatsRepository:
    """Queries of the stats service. Methods taking ``conn`` run inside the caller's transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (committed on exit, rolled back on an exception)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    # --- idempotency --------------------------------------------------------------------------

    async def mark_processed(self, conn: AsyncConnection, event_id: str, at: datetime) -> bool:
        """Record ``event_id``; False if it was already recorded (the event is a duplicate)."""
        stmt = (
            self._insert(processed_t)
            .values(event_id=event_id, processed_at=at)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(processed_t.c.event_id)
        )
        return (await conn.execute(stmt)).first() is not None

    async def prune_processed(self, before: datetime) -> int:
        """Forget event ids recorded before ``before``; returns how many."""
        async with self.write() as conn:
            result = await conn.execute(delete(processed_t).where(processed_t.c.processed_at < before))
        return int(result.rowcount or 0)

    # --- counters -----------------------------------------------------------------------------

    async def add_usage(
        self, conn: AsyncConnection, user_id: str, instance_id: str, day: date, deltas: Mapping[str, int]
    ) -> None:
        """Add ``deltas`` (counter name → amount) to the row of (user, instance, day)."""
        values = {c: int(deltas.get(c, 0)) for c in COUNTERS}
        changed = {c: usage_t.c[c] + v for c, v in values.items() if v}
        stmt = self._insert(usage_t).values(user_id=user_id, instance_id=instance_id, day=day, **values)
        if changed:
            stmt = stmt.on_conflict_do_update(index_elements=["user_id", "instance_id", "day"], set_=changed)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["user_id", "instance_id", "day"])
        await conn.execute(stmt)

    async def add_user_daily(
        self, conn: AsyncConnection, user_id: str, day: date, *, messages_sent: int = 0, api_calls: int = 0
    ) -> tuple[int, int]:
        """Add to the user's day totals; returns the new ``(messages_sent, api_calls)``."""
        stmt = self._insert(user_daily_t).values(
            user_id=user_id, day=day, messages_sent=messages_sent, api_calls=api_calls
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "day"],
            set_={
                "messages_sent": user_daily_t.c.messages_sent + stmt.excluded.messages_sent,
                "api_calls": user_daily_t.c.api_calls + stmt.excluded.api_calls,
            },
        ).returning(user_daily_t.c.messages_sent, user_daily_t.c.api_calls)
        row = (await conn.execute(stmt)).one()
        return int(row[0]), int(row[1])

    async def user_daily(self, conn: AsyncConnection, user_id: str, day: date) -> tuple[int, int]:
        """The user's ``(messages_sent, api_calls)`` on ``day`` (zeros if none)."""
        row = (
            await conn.execute(
                select(user_daily_t.c.messages_sent, user_daily_t.c.api_calls).where(
                    user_daily_t.c.user_id == user_id, user_daily_t.c.day == day
                )
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def usage_by_instance(
        self, conn: AsyncConnection, user_id: str, since: date | None
    ) -> dict[str, dict[str, int]]:
        """The user's counters since ``since`` (``None`` = all), per instance id (``""`` = none)."""
        stmt = select(usage_t.c.instance_id, *_sums(COUNTERS)).where(usage_t.c.user_id == user_id)
        if since is not None:
            stmt = stmt.where(usage_t.c.day >= since)
        stmt = stmt.group_by(usage_t.c.instance_id)
        rows = (await conn.execute(stmt)).mappings().all()
        return {r["instance_id"]: _counters(r) for r in rows}

    async def usage_total(
        self,
        conn: AsyncConnection,
        since: date | None,
        *,
        instance_id: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, int]:
        """Counters since ``since`` of one instance, or of the whole system; with ``user_id``,
        only those counted for that user or for no known user."""
        stmt = select(*_sums(COUNTERS))
        if instance_id is not None:
            stmt = stmt.where(usage_t.c.instance_id == instance_id)
        if user_id is not None:
            stmt = stmt.where(usage_t.c.user_id.in_([user_id, ""]))
        if since is not None:
            stmt = stmt.where(usage_t.c.day >= since)
        return _counters((await conn.execute(stmt)).mappings().one())

    async def instance_daily(
        self, conn: AsyncConnection, instance_id: str, since: date | None, *, user_id: str | None = None
    ) -> list[tuple[date, dict[str, int]]]:
        """Per-day counters of an instance since ``since``, oldest first (days with rows only);
        with ``user_id``, only those counted for that user or for no known user."""
        stmt = select(usage_t.c.day, *_sums(DAILY_FIELDS)).where(usage_t.c.instance_id == instance_id)
        if user_id is not None:
            stmt = stmt.where(usage_t.c.user_id.in_([user_id, ""]))
        if since is not None:
            stmt = stmt.where(usage_t.c.day >= since)
        stmt = stmt.group_by(usage_t.c.day).order_by(usage_t.c.day)
        rows = (await conn.execute(stmt)).mappings().all()
        return [(r["day"], {c: int(r[c] or 0) for c in DAILY_FIELDS}) for r in rows]

    async def instance_usage_owners(self, conn: AsyncConnection, instance_id: str) -> set[str]:
        """User ids that have counters for ``instance_id`` (to find the owner of an unknown one)."""
        rows = await conn.execute(
            select(usage_t.c.user_id).where(usage_t.c.instance_id == instance_id).distinct()
        )
        return {r[0] for r in rows}

    # --- instance and user replicas -------------------------------------------------------------

    async def instance(self, conn: AsyncConnection, instance_id: str) -> InstanceInfo | None:
        row = (
            (await conn.execute(select(instances_t).where(instances_t.c.instance_id == instance_id)))
            .mappings()
            .first()
        )
        return _instance(row) if row else None

    async def instances_named(self, conn: AsyncConnection, ids: list[str]) -> dict[str, InstanceInfo]:
        if not ids:
            return {}
        rows = (await conn.execute(select(instances_t).where(instances_t.c.instance_id.in_(ids)))).mappings()
        return {r["instance_id"]: _instance(r) for r in rows}

    async def instances_of(self, conn: AsyncConnection, user_id: str) -> list[InstanceInfo]:
        """Instances the user owns now (not deleted)."""
        rows = (
            await conn.execute(
                select(instances_t).where(instances_t.c.user_id == user_id, instances_t.c.deleted.is_(False))
            )
        ).mappings()
        return [_instance(r) for r in rows]

    async def owned_instance_count(self, conn: AsyncConnection, user_id: str) -> int:
        stmt = select(func.count()).where(instances_t.c.user_id == user_id, instances_t.c.deleted.is_(False))
        return int((await conn.execute(stmt)).scalar_one())

    async def upsert_instance(
        self, conn: AsyncConnection, instance_id: str, user_id: str, name: str, snapshot_at: str
    ) -> None:
        """Store an ``instance.created/updated`` snapshot unless a newer one is stored."""
        stmt = self._insert(instances_t).values(
            instance_id=instance_id, user_id=user_id, name=name, snapshot_at=snapshot_at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={"user_id": stmt.excluded.user_id, "name": stmt.excluded.name, "snapshot_at": snapshot_at},
            where=or_(instances_t.c.snapshot_at.is_(None), instances_t.c.snapshot_at <= snapshot_at),
        )
        await conn.execute(stmt)

    async def delete_instance(self, conn: AsyncConnection, instance_id: str, user_id: str) -> None:
        stmt = self._insert(instances_t).values(instance_id=instance_id, user_id=user_id, deleted=True)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["instance_id"], set_={"deleted": True}))

    async def set_connected(
        self, conn: AsyncConnection, instance_id: str, user_id: str, connected: bool, at: datetime
    ) -> None:
        """Record the connection state unless a newer one is stored."""
        stmt = self._insert(instances_t).values(
            instance_id=instance_id, user_id=user_id, connected=connected, status_at=at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={"connected": connected, "status_at": at},
            where=or_(instances_t.c.status_at.is_(None), instances_t.c.status_at <= at),
        )
        await conn.execute(stmt)

    async def upsert_user(
        self, conn: AsyncConnection, user_id: str, *, active: bool, role: str, deleted: bool, at: datetime
    ) -> None:
        """Store a ``user.*`` event's state unless a newer one is stored (deletion is final)."""
        stmt = self._insert(users_t).values(
            user_id=user_id, active=active, role=role, deleted=deleted, changed_at=at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "active": active,
                "role": role,
                "deleted": or_(users_t.c.deleted, literal(deleted)),
                "changed_at": at,
            },
            where=or_(users_t.c.changed_at.is_(None), users_t.c.changed_at <= at),
        )
        await conn.execute(stmt)

    async def system_counts(self, conn: AsyncConnection) -> tuple[int, int, int, int]:
        """``(instances, connected instances, users, active users)`` that exist now."""
        inst = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((instances_t.c.connected.is_(True), 1), else_=0)), 0),
                ).where(instances_t.c.deleted.is_(False))
            )
        ).one()
        users = (
            await conn.execute(
                select(
                    func.count(), func.coalesce(func.sum(case((users_t.c.active.is_(True), 1), else_=0)), 0)
                ).where(users_t.c.deleted.is_(False))
            )
        ).one()
        return int(inst[0]), int(inst[1]), int(users[0]), int(users[1])

    # --- limits ---------------------------------------------------------------------------------

    async def get_limits(self, conn: AsyncConnection, user_id: str) -> LimitValues | None:
        row = (
            await conn.execute(
                select(
                    limits_t.c.max_messages_sent, limits_t.c.max_api_calls, limits_t.c.max_instances
                ).where(limits_t.c.user_id == user_id)
            )
        ).first()
        return LimitValues(row[0], row[1], row[2]) if row else None

    async def set_limits(
        self, conn: AsyncConnection, user_id: str, limits: LimitValues, at: datetime
    ) -> None:
        values = {
            "max_messages_sent": limits.max_messages_sent,
            "max_api_calls": limits.max_api_calls,
            "max_instances": limits.max_instances,
            "updated_at": at,
        }
        stmt = self._insert(limits_t).values(user_id=user_id, **values)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=values))

    async def limit_usage(self, conn: AsyncConnection, day: date, user_id: str | None) -> list[LimitUsage]:
        """Users with a limits row (or just ``user_id``) with their usage on ``day``."""
        counts = (
            select(instances_t.c.user_id, func.count().label("n"))
            .where(instances_t.c.deleted.is_(False))
            .group_by(instances_t.c.user_id)
            .subquery()
        )
        stmt = (
            select(
                limits_t.c.user_id,
                limits_t.c.max_messages_sent,
                limits_t.c.max_api_calls,
                limits_t.c.max_instances,
                func.coalesce(user_daily_t.c.messages_sent, 0),
                func.coalesce(user_daily_t.c.api_calls, 0),
                func.coalesce(counts.c.n, 0),
            )
            .select_from(limits_t)
            .outerjoin(
                user_daily_t, and_(user_daily_t.c.user_id == limits_t.c.user_id, user_daily_t.c.day == day)
            )
            .outerjoin(counts, counts.c.user_id == limits_t.c.user_id)
        )
        if user_id is not None:
            stmt = stmt.where(limits_t.c.user_id == user_id)
        rows = (await conn.execute(stmt.order_by(limits_t.c.user_id))).all()
        return [
            LimitUsage(r[0], LimitValues(r[1], r[2], r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows
        ]

    async def insert_limit_event(
        self,
        conn: AsyncConnection,
        *,
        user_id: str,
        limit_name: str,
        period_start: date,
        event_id: str,
        body: str,
        at: datetime,
    ) -> bool:
        """Add a limit event to the outbox; False if one exists for this user, limit and period."""
        stmt = (
            self._insert(limit_events_t)
            .values(
                user_id=user_id,
                limit_name=limit_name,
                period_start=period_start,
                event_id=event_id,
                body=body,
                created_at=at,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "limit_name", "period_start"])
            .returning(limit_events_t.c.event_id)
        )
        return (await conn.execute(stmt)).first() is not None

    async def delete_limit_event(
        self, conn: AsyncConnection, user_id: str, limit_name: str, period_start: date
    ) -> None:
        """Forget the period's limit event, so that a new crossing publishes again."""
        await conn.execute(
            delete(limit_events_t).where(
                limit_events_t.c.user_id == user_id,
                limit_events_t.c.limit_name == limit_name,
                limit_events_t.c.period_start == period_start,
            )
        )

    async def unpublished_limit_events(
        self, created_before: datetime, limit: int = 100
    ) -> list[PendingLimitEvent]:
        """Limit events not yet confirmed as published, written before ``created_before``."""
        async with self.read() as conn:
            rows = await conn.execute(
                select(limit_events_t.c.event_id, limit_events_t.c.body)
                .where(limit_events_t.c.published_at.is_(None), limit_events_t.c.created_at < created_before)
                .order_by(limit_events_t.c.created_at)
                .limit(limit)
            )
            return [PendingLimitEvent(r[0], r[1]) for r in rows]

    async def mark_limit_event_published(self, event_id: str, at: datetime) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(limit_events_t)
                .where(limit_events_t.c.event_id == event_id, limit_events_t.c.published_at.is_(None))
                .values(published_at=at)
            )

    async def prune_limit_events(self, before: date, keep: str) -> int:
        """Forget published limit events of periods before ``before`` (except limit ``keep``)."""
        async with self.write() as conn:
            result = await conn.execute(
                delete(limit_events_t).where(
                    limit_events_t.c.period_start < before,
                    limit_events_t.c.limit_name != keep,
                    limit_events_t.c.published_at.is_not(None),
                )
            )
        return int(result.rowcount or 0)


def _instance(row: Any) -> InstanceInfo:
    return InstanceInfo(
        instance_id=row["instance_id"],
        user_id=row["user_id"],
        name=row["name"] or "",
        deleted=bool(row["deleted"]),
        connected=bool(row["connected"]),
    )
