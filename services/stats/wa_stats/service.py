"""The stats service, assembled: counting events (:mod:`wa_stats.counting`), enforcing limits
(:mod:`wa_stats.limits`), answering queries (:mod:`wa_stats.queries`), and the maintenance that
keeps the store small and the outbox empty.

The clock is injected (``now``): periods, limit resets and pruning follow it, so tests can roll
the day over without waiting.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from wa_common.clock import Clock, utcnow
from wa_common.logs import get_logger
from wa_stats.counting import MAX_WINDOW, Counting
from wa_stats.limits import LimitKeeper, Publish
from wa_stats.periods import utc_day
from wa_stats.queries import StatsQueries
from wa_stats.repository import StatsRepository

log = get_logger(__name__)


class StatsService:
    """The parts of one stats process over a :class:`StatsRepository`.

    ``publish`` sends an event on the bus (``Bus.publish_event``); ``now`` returns the current
    aware UTC time; ``dedup_retention`` is how long processed event ids are remembered;
    ``max_window`` caps the events counted in one transaction (:mod:`wa_stats.counting`).
    """

    def __init__(
        self,
        repo: StatsRepository,
        publish: Publish,
        *,
        now: Clock = utcnow,
        dedup_retention: timedelta = timedelta(days=7),
        max_window: int = MAX_WINDOW,
    ) -> None:
        self.repo = repo
        self.now = now
        self.dedup_retention = dedup_retention
        self.limits = LimitKeeper(repo, publish, now)
        self.counting = Counting(repo, self.limits, now, max_window=max_window)
        self.queries = StatsQueries(repo, self.limits, now)

    async def prune(self) -> tuple[int, int]:
        """Forget processed event ids and published limit events older than the retention."""
        now = self.now()
        ids = await self.repo.usage.prune_processed(now - self.dedup_retention)
        limit_rows = await self.limits.prune(
            utc_day(now) - timedelta(days=max(int(self.dedup_retention.days), 1))
        )
        return ids, limit_rows

    async def maintenance_loop(self, interval_s: float) -> None:
        """Every ``interval_s`` seconds: re-publish pending limit events, prune old rows."""
        while True:
            try:
                await self.limits.flush_outbox()
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stats maintenance round failed")
            await asyncio.sleep(interval_s)
