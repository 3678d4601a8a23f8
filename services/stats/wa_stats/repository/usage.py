"""Usage counters and the ids of counted events.

Counters are incremented with ``INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c`` (atomic
per row on both databases), one statement per table for a whole window of events, in the
transaction that records the window's event ids (:meth:`UsageRepository.record_processed`), so a
redelivered event counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import naive_utc
from wa_stats.repository.base import Repository, Store, processed_t, usage_t, user_daily_t

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

UsageKey = tuple[str, str, date]
"""A ``stats_usage_daily`` row: (user id or ``""``, instance id or ``""``, UTC day)."""
DailyKey = tuple[str, date]
"""A ``stats_user_daily`` row: (user id, UTC day)."""


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

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        # Built once: the same statements for every window (compiled once, then cached).
        processed = self.store.insert(processed_t).on_conflict_do_nothing(index_elements=["event_id"])
        self._record = processed.returning(processed_t.c.event_id)
        usage = self.store.insert(usage_t)
        self._add_usage = usage.on_conflict_do_update(
            index_elements=["user_id", "instance_id", "day"],
            set_={c: usage_t.c[c] + usage.excluded[c] for c in COUNTERS},
        )
        daily = self.store.insert(user_daily_t)
        self._add_daily = daily.on_conflict_do_update(
            index_elements=["user_id", "day"],
            set_={c: user_daily_t.c[c] + daily.excluded[c] for c in ("messages_sent", "api_calls")},
        ).returning(
            user_daily_t.c.user_id, user_daily_t.c.day, user_daily_t.c.messages_sent, user_daily_t.c.api_calls
        )

    # --- idempotency --------------------------------------------------------------------------

    async def record_processed(
        self, conn: AsyncConnection, event_ids: Iterable[str], at: datetime
    ) -> set[str]:
        """Record ``event_ids`` (one ``executemany``: a multi-row ``INSERT ... ON CONFLICT DO
        NOTHING RETURNING``); returns those not recorded before (the others are duplicates).
        Ids must be distinct."""
        stamp = naive_utc(at)
        rows = [{"event_id": event_id, "processed_at": stamp} for event_id in sorted(event_ids)]
        if not rows:
            return set()
        return {r[0] for r in await conn.execute(self._record, rows)}

    async def prune_processed(self, before: datetime) -> int:
        """Forget event ids recorded before ``before``; returns how many."""
        async with self.store.write() as conn:
            result = await conn.execute(
                delete(processed_t).where(processed_t.c.processed_at < naive_utc(before))
            )
        return int(result.rowcount or 0)

    # --- counting -----------------------------------------------------------------------------

    async def add_usage(self, conn: AsyncConnection, deltas: Mapping[UsageKey, Mapping[str, int]]) -> None:
        """Add to the rows of (user, instance, day) their ``deltas`` (counter name → amount): one
        multi-row upsert, rows in key order so that concurrent writers lock them alike. Keys must
        be distinct (a row may not be updated twice by one statement)."""
        rows = [
            {
                "user_id": key[0],
                "instance_id": key[1],
                "day": key[2],
                **{c: int(d.get(c, 0)) for c in COUNTERS},
            }
            for key, d in sorted(deltas.items())
        ]
        if rows:
            await conn.execute(self._add_usage, rows)

    async def add_user_daily(
        self, conn: AsyncConnection, deltas: Mapping[DailyKey, tuple[int, int]]
    ) -> dict[DailyKey, tuple[int, int]]:
        """Add ``(messages_sent, api_calls)`` to each (user, day) total (one multi-row upsert,
        in key order); returns the new ``(messages_sent, api_calls)`` of those rows."""
        rows = [
            {"user_id": key[0], "day": key[1], "messages_sent": int(d[0]), "api_calls": int(d[1])}
            for key, d in sorted(deltas.items())
        ]
        if not rows:
            return {}
        result = await conn.execute(self._add_daily, rows)
        return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in result}

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
