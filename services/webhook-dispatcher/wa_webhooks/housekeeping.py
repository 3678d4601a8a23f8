"""Periodic upkeep of the outbox, each a background task until cancelled: the outbox gauges and
the retention of finished deliveries. A round that fails is logged and tried again next time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from wa_common.logs import get_logger
from wa_webhooks import metrics
from wa_webhooks.deliveries import DeliveryStore
from wa_webhooks.retention import RetentionStore

log = get_logger(__name__)


async def every(interval_s: float, step: Callable[[], Awaitable[None]], failed: str) -> None:
    """Run ``step`` now and then every ``interval_s`` seconds; a failure is logged as ``failed``."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(failed, error=str(exc))
        await asyncio.sleep(interval_s)


async def run_gauges(deliveries: DeliveryStore, interval_s: float = 5.0) -> None:
    """Refresh the outbox gauges (pending count, oldest pending age) every ``interval_s``."""

    async def refresh() -> None:
        pending, oldest = await deliveries.pending_stats()
        metrics.OUTBOX_PENDING.set(pending)
        age = (deliveries.clock() - oldest).total_seconds() if oldest is not None else 0.0
        metrics.OUTBOX_OLDEST_AGE.set(max(0.0, age))

    await every(interval_s, refresh, "outbox gauges not refreshed")


async def run_retention(retention: RetentionStore, days: float, interval_s: float = 3600.0) -> None:
    """Delete finished deliveries older than ``days`` (with their attempts) every ``interval_s``,
    in batches; ``0`` days keeps everything (returns at once)."""
    if days <= 0:
        return

    async def prune() -> None:
        before = retention.clock() - timedelta(days=days)
        total = 0
        while (pruned := await retention.prune_finished(before)) > 0:
            total += pruned
        if total:
            metrics.DELIVERIES_PRUNED.inc(total)
            log.info("old webhook deliveries pruned", count=total, days=days)

    await every(interval_s, prune, "webhook delivery retention failed")
