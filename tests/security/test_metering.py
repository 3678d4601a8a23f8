"""Findings 1 and 2: usage metering counts every call against its caller, attributes a call to
an instance only once the caller is authorised for it, and a hostile id cannot poison the
usage batch that carries every user's calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from conftest import wait_for
from tests.security.conftest import SecuritySystem, User, create_instance

pytestmark = pytest.mark.e2e


async def _usage(sec: SecuritySystem, user: User) -> dict[str, Any]:
    response = await sec.api.get("/api/stats/user", params={"period": "today"}, headers=user.bearer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _instance_calls(usage: dict[str, Any], instance_id: str) -> int:
    return sum(row["apiCalls"] for row in usage["instances"] if row["instanceId"] == instance_id)


async def _dead_letters(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_hostile_ids_cannot_stop_metering_for_everyone(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """``GET /api/instances/%00/status`` used to put a NUL into the usage batch: the stats insert
    failed and the whole batch (every user's calls) was dead-lettered, so ``maxApiCalls``
    stopped working. Now such ids are refused at the edge and every other call is counted."""
    alice, mallory = await new_user(), await new_user()
    instance = await create_instance(sec, alice)
    good_calls = 8  # 4 hostile calls each: within the security gateway's burst of 40
    for _ in range(good_calls):
        response = await sec.api.get(f"/api/instances/{instance['id']}/status", headers=alice.key)
        assert response.status_code == 200
        for hostile in ("%00", "%ED%A0%80", "x%0A", "%EF%BC%91"):
            bad = await sec.api.get(f"/api/instances/{hostile}/status", headers=mallory.key)
            assert bad.status_code in (400, 404), (hostile, bad.status_code, bad.text)
            assert bad.json()["error"]

    async def counted() -> bool:
        usage = await _usage(sec, alice)
        return _instance_calls(usage, instance["id"]) >= good_calls

    await wait_for(counted, timeout_s=20, interval_s=0.3, message="alice's calls counted by stats")

    # Mallory's probes count against Mallory (so probing cannot escape maxApiCalls; her last
    # ones may travel in a later usage batch than Alice's) ...
    async def probes_counted() -> dict[str, Any] | None:
        usage = await _usage(sec, mallory)
        return usage if usage["total"]["apiCalls"] >= 4 * good_calls else None

    mallory_usage = await wait_for(probes_counted, timeout_s=20, interval_s=0.3, message="the probes counted")
    # ... and no instance of anyone shows up in her statistics.
    assert mallory_usage["instances"] == []
    assert await _dead_letters(sec.amqp_url, "wa.events.stats.dead") == 0


async def test_a_foreign_instance_never_appears_in_my_statistics(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """Probing another user's instance (404) counts against the prober, without the instance:
    neither its id nor its name reaches the prober's statistics, nor the owner's counts."""
    owner, stranger = await new_user(), await new_user()
    instance = await create_instance(sec, owner, name="Owner's secret project")
    own_calls = 3
    for _ in range(own_calls):
        assert (await sec.api.get(f"/api/instances/{instance['id']}", headers=owner.key)).status_code == 200
    probes = [
        ("GET", f"/api/instances/{instance['id']}"),
        ("GET", f"/api/instances/{instance['id']}/status"),
        ("GET", f"/api/whatsapp/{instance['id']}/qr"),
        ("GET", f"/api/stats/instances/{instance['id']}"),
        ("POST", f"/api/instances/{instance['id']}/reconnect"),
    ]
    for method, path in probes:
        response = await sec.api.request(method, path, headers=stranger.key)
        assert response.status_code == 404, (path, response.status_code)

    async def stranger_counted() -> dict[str, Any] | None:
        usage = await _usage(sec, stranger)
        return usage if usage["total"]["apiCalls"] >= len(probes) else None

    usage = await wait_for(stranger_counted, timeout_s=20, interval_s=0.3, message="the probes counted")
    assert usage["instances"] == [], usage
    assert "Owner's secret project" not in str(usage)

    async def owner_counted() -> dict[str, Any] | None:
        owner_usage = await _usage(sec, owner)
        return owner_usage if _instance_calls(owner_usage, instance["id"]) >= own_calls else None

    owner_usage = await wait_for(owner_counted, timeout_s=20, interval_s=0.3, message="the owner's calls")
    # Only the owner's own successful calls (the create and the three gets; the statistics
    # queries themselves carry no instance id), never the stranger's five.
    assert _instance_calls(owner_usage, instance["id"]) == own_calls
