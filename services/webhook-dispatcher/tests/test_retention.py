"""Retention of finished deliveries (``WEBHOOKS_RETENTION_DAYS``) on a real PostgreSQL store:
finished deliveries older than the cut go with their attempts; pending ones and newer ones stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from wa_common.clock import utcnow
from wa_common.ids import new_id
from wa_common.schemas.status import DeliveryStatus
from wa_webhooks.deliveries import AttemptResult, NewDelivery
from wa_webhooks.models import Attempt
from wa_webhooks.repository import Repository

pytestmark = pytest.mark.integration


async def test_old_finished_deliveries_are_pruned_with_their_attempts(repo: Repository) -> None:
    iid = new_id()
    items = [
        NewDelivery(new_id(), iid, "u1", "message_sent", "https://example.com/h", "{}", 3, utcnow())
        for _ in range(3)
    ]
    ids = await repo.deliveries.enqueue(items)
    claimed = {c.id: c for c in await repo.deliveries.claim(limit=10, lease=timedelta(minutes=1))}
    assert set(ids) <= set(claimed)
    finished, pending = ids[:2], ids[2]
    for delivery_id, status in zip(finished, (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED), strict=True):
        delivered = status == DeliveryStatus.DELIVERED
        result = AttemptResult(
            200 if delivered else 500, "2xx" if delivered else "5xx", None, utcnow(), 0.005
        )
        assert await repo.deliveries.record_attempt(
            claimed[delivery_id], result, url="https://example.com/h", status=status
        )
    await repo.deliveries.release_many([claimed[pending]], delay=timedelta(0))

    async def attempts() -> int:
        async with repo.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(Attempt))).scalar_one())

    prune = repo.retention.prune_finished
    assert await attempts() == 2
    assert await prune(utcnow() - timedelta(days=1)) == 0, "nothing is older than a day"
    later = utcnow() + timedelta(milliseconds=1)
    assert await prune(later, limit=1) == 1, "batches are bounded"
    assert await prune(later) == 1
    assert await prune(later) == 0
    assert await attempts() == 0
    left, _, total = await repo.deliveries.page(iid, status=None, limit=10, skip=0)
    assert total == 1 and [d.id for d in left] == [pending] and left[0].status == "pending"
