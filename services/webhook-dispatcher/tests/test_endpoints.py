"""The settings replica (``wa_webhooks.endpoints``) on a real PostgreSQL store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from wa_common.ids import new_id
from wa_common.schemas.events import InstanceSnapshot
from wa_webhooks.endpoints import EndpointStore
from wa_webhooks.repository import Repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoints(repo: Repository) -> EndpointStore:
    return repo.endpoints


def snapshot(instance_id: str, updated_at: datetime | None = None) -> InstanceSnapshot:
    return InstanceSnapshot(
        instance_id=instance_id,
        user_id="u1",
        name="x",
        webhook_url="https://example.com/h",
        webhook_enabled=True,
        updated_at=(updated_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
    )


async def test_the_newest_snapshot_wins(endpoints: EndpointStore) -> None:
    iid = new_id()
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert await endpoints.apply_snapshot(snapshot(iid, new))
    assert not await endpoints.apply_snapshot(snapshot(iid, old)), "an older snapshot is ignored"
    stored = await endpoints.get(iid)
    assert stored is not None and stored.updated_at == "2026-01-02T00:00:00Z"
    assert list(await endpoints.get_many([iid, new_id()])) == [iid]
    assert [e.instance_id for e in await endpoints.of_user("u1")] == [iid]


async def test_a_deletion_racing_a_snapshot_or_itself_leaves_a_tombstone(endpoints: EndpointStore) -> None:
    """instance.deleted may arrive twice (at-least-once) and concurrently with the instance's
    first snapshot: every order ends in a tombstone, none fails on the primary key."""
    for _ in range(5):
        iid = new_id()
        snap = snapshot(iid)
        await asyncio.gather(
            endpoints.delete_instance(iid, "u1"),
            endpoints.delete_instance(iid, "u1"),
            endpoints.apply_snapshot(snap),
        )
        endpoint = await endpoints.get(iid)
        assert endpoint is not None and endpoint.deleted and not endpoint.enabled and endpoint.secret is None
        assert not await endpoints.apply_snapshot(snap), "a later snapshot does not revive it"
        assert iid not in [e.instance_id for e in await endpoints.of_user("u1")], "nor lists it"
