"""Answering the statistics and limits queries (shapes: :mod:`wa_common.schemas.stats`).

Who may ask what is checked before (:mod:`wa_stats.consumers`); these read the store. Periods
are calendar-aligned UTC and follow the clock (:mod:`wa_stats.periods`).
"""

from __future__ import annotations

from wa_common.bus.router import RequestError
from wa_common.clock import Clock
from wa_common.ids import is_id
from wa_common.schemas import Caller, stats
from wa_stats.limits import LimitKeeper, blocked
from wa_stats.periods import day_start, period_start, utc_day
from wa_stats.repository import COUNTERS, StatsRepository


class StatsQueries:
    """User, instance and system statistics; a user's limits and the blocks in force."""

    def __init__(self, repo: StatsRepository, limits: LimitKeeper, now: Clock) -> None:
        self.repo = repo
        self.limits = limits
        self.now = now

    # --- statistics -----------------------------------------------------------------------------

    async def user_stats(self, user_id: str, period: str) -> stats.UserStats:
        """``GET /api/stats/user``: the user's usage in ``period`` (today|week|month|year|all)."""
        since = period_start(period, self.now(), stats.USER_PERIODS)
        async with self.repo.read() as conn:
            usage = await self.repo.usage.usage_by_instance(conn, user_id, since)
            owned = {i.instance_id: i for i in await self.repo.replicas.instances_of(conn, user_id)}
            others = await self.repo.replicas.instances_named(
                conn, sorted(i for i in usage if i and i not in owned)
            )
        # Counters of instances the user no longer owns (deleted) are listed; an instance known to
        # be someone else's never is (calls attributed to it before attribution was checked count
        # in the user's totals only).
        other_ids = sorted(
            i
            for i in usage
            if i
            and i not in owned
            and not ((info := others.get(i)) and info.user_id and info.user_id != user_id)
        )
        total = {c: sum(row[c] for row in usage.values()) for c in COUNTERS}
        rows = []
        for instance_id in sorted(set(owned) | set(other_ids)):
            info = owned.get(instance_id) or others.get(instance_id)
            counters = usage.get(instance_id, dict.fromkeys(COUNTERS, 0))
            rows.append(
                stats.UserStatsInstance(instance_id=instance_id, name=info.name if info else "", **counters)
            )
        return stats.UserStats(total=stats.UserStatsTotal(instance_count=len(owned), **total), instances=rows)

    async def instance_stats(
        self, caller: Caller | None, instance_id: str, period: str
    ) -> stats.InstanceStats:
        """``GET /api/stats/instances/{id}``: usage in ``period`` (today|week|month|all).

        Raises :class:`RequestError` 404 when the instance is unknown, deleted or not the caller's.
        """
        since = period_start(period, self.now(), stats.INSTANCE_PERIODS)
        if not is_id(instance_id):
            raise RequestError(404, "instance not found")
        not_found = RequestError(404, f"instance {instance_id} not found")
        async with self.repo.read() as conn:
            info = await self.repo.replicas.instance(conn, instance_id)
            # Never another known user's counters: only the owner's when stats knows the owner;
            # otherwise everyone's for an admin and the caller's own for a user (calls another
            # user made about the same id are theirs, not this caller's to see). Counters of no
            # known user (events that named none) stay in.
            counted_for: str | None
            if info is not None:
                if info.deleted:
                    raise not_found
                owners = {info.user_id}
                counted_for = info.user_id or None
            else:
                owners = await self.repo.usage.instance_usage_owners(conn, instance_id)
                if not owners:
                    raise not_found
                counted_for = caller.user_id if caller is not None and not caller.is_admin else None
            if caller is not None and not caller.is_admin and caller.user_id not in owners:
                raise not_found
            totals = await self.repo.usage.usage_total(
                conn, since, instance_id=instance_id, user_id=counted_for
            )
            daily = await self.repo.usage.instance_daily(conn, instance_id, since, user_id=counted_for)
        return stats.InstanceStats(
            usage=stats.InstanceUsage(
                **totals,
                daily_stats=[stats.DailyStat(date=day_start(d), **counters) for d, counters in daily],
            )
        )

    async def system_stats(self, period: str) -> stats.SystemStats:
        """``GET /api/stats/system``: instances, users and the whole usage in ``period``."""
        since = period_start(period, self.now(), stats.SYSTEM_PERIODS)
        async with self.repo.read() as conn:
            instances, connected, users, active = await self.repo.replicas.system_counts(conn)
            usage = await self.repo.usage.usage_total(conn, since)
        return stats.SystemStats(
            instances=stats.CountActive(total=instances, active=connected),
            users=stats.CountActive(total=users, active=active),
            usage=stats.UsageCounters(**usage),
        )

    # --- limits ---------------------------------------------------------------------------------

    async def limits_state(self, user_id: str | None) -> stats.LimitsState:
        """Blocks in force now for ``user_id`` (``None``: every user with limits)."""
        now = self.now()
        async with self.repo.read() as conn:
            rows = await self.repo.limits.limit_usage(conn, utc_day(now), user_id)
        return stats.LimitsState(blocked=[b for row in rows for b in blocked(row, now)])

    async def get_limits(self, user_id: str) -> stats.UserLimits:
        """The user's limits (unlimited when none were set) and the blocks in force now."""
        now = self.now()
        async with self.repo.read() as conn:
            limits = await self.repo.limits.get_limits(conn, user_id)
            rows = await self.repo.limits.limit_usage(conn, utc_day(now), user_id)
        return stats.UserLimits(
            user_id=user_id,
            limits=limits or stats.Limits(),
            state=[b for row in rows for b in blocked(row, now)],
        )

    async def set_limits(self, user_id: str, limits: stats.Limits) -> stats.UserLimits:
        """Replace a user's limits (:meth:`LimitKeeper.replace`); returns them with the blocks
        in force under them."""
        async with self.limits.unit() as unit:
            await self.limits.replace(unit, user_id, limits)
        return await self.get_limits(user_id)
