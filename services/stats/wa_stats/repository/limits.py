"""Per-user limits and the usage they are compared against."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import naive_utc
from wa_common.schemas.stats import Limits
from wa_common.schemas.status import LimitName
from wa_stats.repository.base import Repository, instances_t, limits_t, user_daily_t

_LIMIT_COLUMNS = (limits_t.c.max_messages_sent, limits_t.c.max_api_calls, limits_t.c.max_instances)


def _limits(values: tuple[int | None, ...]) -> Limits:
    return Limits(max_messages_sent=values[0], max_api_calls=values[1], max_instances=values[2])


@dataclass(frozen=True)
class LimitUsage:
    """A user's limits next to today's usage and the instances they own now."""

    user_id: str
    limits: Limits
    messages_sent: int
    api_calls: int
    instance_count: int

    def usage(self, name: LimitName) -> int:
        """What limit ``name`` is compared against."""
        if name is LimitName.MAX_MESSAGES_SENT:
            return self.messages_sent
        if name is LimitName.MAX_API_CALLS:
            return self.api_calls
        return self.instance_count


class LimitsRepository(Repository):
    """``stats_limits``, read together with the day's usage (``stats_user_daily``) and the
    instances owned (``stats_instances``)."""

    async def get_limits(self, conn: AsyncConnection, user_id: str) -> Limits | None:
        """The user's limits; ``None`` when none were ever set."""
        row = (await conn.execute(select(*_LIMIT_COLUMNS).where(limits_t.c.user_id == user_id))).first()
        return _limits(tuple(row)) if row else None

    async def limits_of(self, conn: AsyncConnection, user_ids: Iterable[str]) -> dict[str, Limits]:
        """The limits of those of ``user_ids`` that have any (one query)."""
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        rows = await conn.execute(
            select(limits_t.c.user_id, *_LIMIT_COLUMNS).where(limits_t.c.user_id.in_(ids))
        )
        return {r[0]: _limits(tuple(r[1:])) for r in rows}

    async def set_limits(self, conn: AsyncConnection, user_id: str, limits: Limits, at: datetime) -> None:
        values = {
            "max_messages_sent": limits.max_messages_sent,
            "max_api_calls": limits.max_api_calls,
            "max_instances": limits.max_instances,
            "updated_at": naive_utc(at),
        }
        stmt = self.store.insert(limits_t).values(user_id=user_id, **values)
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
                *_LIMIT_COLUMNS,
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
        return [LimitUsage(r[0], _limits(tuple(r[1:4])), int(r[4]), int(r[5]), int(r[6])) for r in rows]
