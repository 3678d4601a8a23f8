"""Retention of finished deliveries (``WEBHOOKS_RETENTION_DAYS``) on a real PostgreSQL store:
finished deliveries older than the cut go with their attempts; pending ones and newer ones stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_webhooks.models import Attempt
from wa_webhooks.repository import NewDelivery, Repository, now_ms

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def repo(fresh_db: str) -> AsyncIterator[Repository]:
    await asyncio.to_thread(upgrade, "wa_webhooks", fresh_db)
    engine = create_engine(fresh_db)
    yield Repository(engine)
    await engine.dispose()


async def test_old_finished_deliveries_are_pruned_with_their_attempts(repo: Repository) -> None:
    iid = new_id()
    items = [
        NewDelivery(new_id(), iid, "u1", "message_sent", "https://example.com/h", "{}", 3, now_ms())
        for _ in range(3)
    ]
    ids = await repo.enqueue(items)
    claimed = {c.id: c for c in await repo.claim(limit=10, lease_ms=60_000)}
    assert set(ids) <= set(claimed)
    finished, pending = ids[:2], ids[2]
    for delivery_id, status in zip(finished, ("delivered", "failed"), strict=True):
        assert await repo.record_attempt(
            claimed[delivery_id],
            url="https://example.com/h",
            started_at=now_ms(),
            duration_ms=5,
            status_code=200 if status == "delivered" else 500,
            outcome="ok" if status == "delivered" else "http_error",
            error=None,
            new_status=status,
            next_attempt_at=None,
        )
    await repo.release_many([claimed[pending]], delay_ms=0)

    async def attempts() -> int:
        async with repo.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(Attempt))).scalar_one())

    assert await attempts() == 2
    assert await repo.prune_finished(now_ms() - 86_400_000) == 0, "nothing is older than a day"
    assert await repo.prune_finished(now_ms() + 1, limit=1) == 1, "batches are bounded"
    assert await repo.prune_finished(now_ms() + 1) == 1
    assert await repo.prune_finished(now_ms() + 1) == 0
    assert await attempts() == 0
    left, _, total = await repo.list_deliveries(iid, status=None, limit=10, skip=0)
    assert total == 1 and [d.id for d in left] == [pending] and left[0].status == "pending"


async def test_a_deletion_racing_a_snapshot_or_itself_leaves_a_tombstone(repo: Repository) -> None:
    """instance.deleted may arrive twice (at-least-once) and concurrently with the instance's
    first snapshot: every order ends in a tombstone, none fails on the primary key."""
    from datetime import UTC, datetime

    from wa_common.schemas.events import InstanceSnapshot

    for _ in range(5):
        iid = new_id()
        snap = InstanceSnapshot(
            instance_id=iid,
            user_id="u1",
            name="x",
            webhook_url="https://example.com/h",
            webhook_enabled=True,
            updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        await asyncio.gather(
            repo.delete_instance(iid, "u1"), repo.delete_instance(iid, "u1"), repo.apply_snapshot(snap)
        )
        endpoint = await repo.endpoint(iid)
        assert endpoint is not None and endpoint.deleted and not endpoint.enabled and endpoint.secret is None
        assert not await repo.apply_snapshot(snap), "a later snapshot does not revive it"
