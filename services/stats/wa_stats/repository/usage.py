"""Usage counters and the ids of counted events.

Counters are incremented with ``INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c`` (atomic
per row on both databases); the writes of one event happen in one transaction together with the
row that records its id (:meth:`UsageRepository.mark_processed`), so a redelivered event counts
once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import naive_utc
from wa_stats.repository.base import Repository, processed_t, usage_t, user_daily_t

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


def _sums(columns: tuple[str, ...]) -> list[Any]:
    return [func.coalesce(func.sum(usage_t.c[c]), 0).label(c) for c in columns]


def _counters(row: Any, columns: tuple[str, ...] = COUNTERS) -> dict[str, int]:
    return {c: int(row[c] or 0) for c in columns}


def _scoped(stmt: Any, since: date | None, user_id: str | None) -> Any:
    """``stmt`` limited to days from ``since`` (``None``: all) and, with ``user_id``, to the
    counters of that user or of no known user."""
    if user_id is not None:
        stmt = stmt.where(usage_t.c.user_id.in_([user_id, ""]))
    if since is not None:
        stmt = stmt.where(usage_t.c.day >= since)
    return stmt


class UsageRepository(Repository):
    """``stats_usage_daily``, ``stats_user_daily`` and ``stats_processed_events``."""

    # --- idempotency --------------------------------------------------------------------------

    async def mark_processed(self, conn: AsyncConnection, event_id: str, at: datetime) -> bool:
        """Record ``event_id``; False if it was already recorded (the event is a duplicate)."""
        stmt = (
            self.store.insert(processed_t)
            .values(event_id=event_id, processed_at=naive_utc(at))
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(processed_t.c.event_id)
        )
        return (await conn.execute(stmt)).first() is not None

    async def prune_processed(self, before: datetime) -> int:
        """Forget event ids recorded before ``before``; returns how many."""
        async with self.store.write() as conn:
            result = await conn.execute(
                delete(processed_t).where(processed_t.c.processed_at < naive_utc(before))
            )
        return int(result.rowcount or 0)

    # --- counting -----------------------------------------------------------------------------

    async def add_usage(
        self, conn: AsyncConnection, user_id: str, instance_id: str, day: date, deltas: Mapping[str, int]
    ) -> None:
        """Add ``deltas`` (counter name → amount) to the row of (user, instance, day)."""
        values = {c: int(deltas.get(c, 0)) for c in COUNTERS}
        changed = {c: usage_t.c[c] + v for c, v in values.items() if v}
        stmt = self.store.insert(usage_t).values(user_id=user_id, instance_id=instance_id, day=day, **values)
        if changed:
            stmt = stmt.on_conflict_do_update(index_elements=["user_id", "instance_id", "day"], set_=changed)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["user_id", "instance_id", "day"])
        await conn.execute(stmt)

    async def add_user_daily(
        self, conn: AsyncConnection, user_id: str, day: date, *, messages_sent: int = 0, api_calls: int = 0
    ) -> tuple[int, int]:
        """Add to the user's day totals; returns the new ``(messages_sent, api_calls)``."""
        stmt = self.store.insert(user_daily_t).values(
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

    # --- reading ------------------------------------------------------------------------------

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
        stmt = _scoped(stmt, since, None).group_by(usage_t.c.instance_id)
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
        return _counters((await conn.execute(_scoped(stmt, since, user_id))).mappings().one())

    async def instance_daily(
        self, conn: AsyncConnection, instance_id: str, since: date | None, *, user_id: str | None = None
    ) -> list[tuple[date, dict[str, int]]]:
        """Per-day counters of an instance since ``since``, oldest first (days with rows only);
        with ``user_id``, only those counted for that user or for no known user."""
        stmt = select(usage_t.c.day, *_sums(DAILY_FIELDS)).where(usage_t.c.instance_id == instance_id)
        stmt = _scoped(stmt, since, user_id).group_by(usage_t.c.day).order_by(usage_t.c.day)
        rows = (await conn.execute(stmt)).mappings().all()
        return [(r["day"], _counters(r, DAILY_FIELDS)) for r in rows]

    async def instance_usage_owners(self, conn: AsyncConnection, instance_id: str) -> set[str]:
        """User ids that have counters for ``instance_id`` (to find the owner of an unknown one)."""
        rows = await conn.execute(
            select(usage_t.c.user_id).where(usage_t.c.instance_id == instance_id).distinct()
        )
        return {r[0] for r in rows}
