"""The outbox of ``limit_exceeded`` events: one row per user, limit and period (the unique key
makes "one event per limit per period" hold across replicas), published after the commit that
wrote it and marked published then."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import naive_utc
from wa_common.schemas.status import LimitName
from wa_stats.repository.base import Repository, limit_events_t


@dataclass(frozen=True)
class PendingLimitEvent:
    event_id: str
    body: str


class OutboxRepository(Repository):
    """``stats_limit_events``."""

    async def insert_limit_event(
        self,
        conn: AsyncConnection,
        *,
        user_id: str,
        limit_name: LimitName,
        period_start: date,
        event_id: str,
        body: str,
        at: datetime,
    ) -> bool:
        """Add a limit event to the outbox; False if one exists for this user, limit and period."""
        stmt = (
            self.store.insert(limit_events_t)
            .values(
                user_id=user_id,
                limit_name=str(limit_name),
                period_start=period_start,
                event_id=event_id,
                body=body,
                created_at=naive_utc(at),
            )
            .on_conflict_do_nothing(index_elements=["user_id", "limit_name", "period_start"])
            .returning(limit_events_t.c.event_id)
        )
        return (await conn.execute(stmt)).first() is not None

    async def delete_limit_event(
        self, conn: AsyncConnection, user_id: str, limit_name: LimitName, period_start: date
    ) -> None:
        """Forget the period's limit event, so that a new crossing publishes again."""
        await conn.execute(
            delete(limit_events_t).where(
                limit_events_t.c.user_id == user_id,
                limit_events_t.c.limit_name == str(limit_name),
                limit_events_t.c.period_start == period_start,
            )
        )

    async def unpublished_limit_events(
        self, created_before: datetime, limit: int = 100
    ) -> list[PendingLimitEvent]:
        """Limit events not yet confirmed as published, written before ``created_before``."""
        async with self.store.read() as conn:
            rows = await conn.execute(
                select(limit_events_t.c.event_id, limit_events_t.c.body)
                .where(
                    limit_events_t.c.published_at.is_(None),
                    limit_events_t.c.created_at < naive_utc(created_before),
                )
                .order_by(limit_events_t.c.created_at)
                .limit(limit)
            )
            return [PendingLimitEvent(r[0], r[1]) for r in rows]

    async def mark_limit_event_published(self, event_id: str, at: datetime) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                update(limit_events_t)
                .where(limit_events_t.c.event_id == event_id, limit_events_t.c.published_at.is_(None))
                .values(published_at=naive_utc(at))
            )

    async def prune_limit_events(self, before: date, keep: LimitName) -> int:
        """Forget published limit events of periods before ``before`` (except limit ``keep``)."""
        async with self.store.write() as conn:
            result = await conn.execute(
                delete(limit_events_t).where(
                    limit_events_t.c.period_start < before,
                    limit_events_t.c.limit_name != str(keep),
                    limit_events_t.c.published_at.is_not(None),
                )
            )
        return int(result.rowcount or 0)
