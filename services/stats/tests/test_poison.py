"""Bad input never poisons stats (the stats service in this process, on the real RabbitMQ and
PostgreSQL):

- a ``usage.api_calls`` batch with bad items among good ones (a NUL byte as instance id, as
  ``GET /api/instances/%00/status`` once produced, bad user ids and counts) counts the good ones,
  de-attributes or drops the bad ones, and is never retried or dead-lettered;
- a user's statistics never show another user's instance, whether the gateway attributes a
  call to it now or did so before;
- a stats request that is malformed or invalid is answered 400 and acknowledged, never
  dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from conftest import raw_bus_request, wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    SERVICE_QUEUES,
    STATS_QUERY_QUEUE,
    Bus,
    RpcClient,
    dead_letter_queue,
)
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Event, EventType, Query, Reply
from wa_common.schemas.stats import STATS_INSTANCE, STATS_LIMITS_SET, STATS_USER
from wa_stats.main import build_app
from wa_stats.service import StatsService
from wa_stats.settings import StatsSettings

pytestmark = pytest.mark.integration

ADMIN = Caller(user_id="admin-test", role="admin")
EVENTS_QUEUE = SERVICE_QUEUES["stats"].name


@dataclass
class Running:
    service: StatsService
    bus: Bus
    rpc: RpcClient

    async def ask(
        self, name: str, caller: Caller | None, instance_id: str | None = None, **payload: Any
    ) -> Reply:
        query = Query(name=name, caller=caller, instance_id=instance_id, payload=payload)
        return await self.rpc.call(EXCHANGE_COMMANDS, STATS_QUERY_QUEUE, query)

    async def depth(self, queue: str) -> int:
        channel = await self.bus.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await channel.close()


@pytest.fixture
async def stats(amqp_url: str, postgres_url: str) -> AsyncIterator[Running]:
    await asyncio.to_thread(upgrade, "wa_stats", postgres_url)
    settings = StatsSettings(profile="embedded", amqp_url=amqp_url, database_url=postgres_url, port=0)
    app = build_app(settings)
    runtime = app.state.runtime
    await runtime.start()
    bus = Bus(amqp_url, service="stats-poison-test", publish_timeout_s=5)
    await bus.connect(declare=False)
    rpc = RpcClient(bus)
    await rpc.start()
    try:
        yield Running(app.state.stats, bus, rpc)
    finally:
        await bus.close(timeout_s=2)
        await runtime.stop()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected(reason: str) -> float:
    return sample("wa_stats_api_usage_items_rejected_total", {"reason": reason})


def created(user: str, instance: str, name: str) -> Event:
    return Event(
        type=EventType.INSTANCE_CREATED,
        instance_id=instance,
        user_id=user,
        data={"instanceId": instance, "userId": user, "name": name, "updatedAt": "2026-01-01T00:00:00Z"},
    )


def batch(counts: list[Any]) -> Event:
    return Event(
        type=EventType.API_USAGE,
        data={"gateway": "gw-poison", "day": datetime.now(UTC).date().isoformat(), "counts": counts},
    )


async def user_stats(s: Running, user: str) -> dict[str, Any]:
    reply = await s.ask(STATS_USER, Caller(user_id=user), period="all")
    assert reply.ok, reply
    return dict(reply.data)


async def test_a_poisoned_item_never_fails_the_usage_batch(stats: Running) -> None:
    s = stats
    alice, bob = f"user-{new_id()}", f"user-{new_id()}"
    a, b = new_id(), new_id()
    await s.bus.publish_event(created(alice, a, "Alice's"))
    await s.bus.publish_event(created(bob, b, "Bob's"))

    async def both_known() -> bool:
        return (await user_stats(s, alice))["total"]["instanceCount"] == 1 and (await user_stats(s, bob))[
            "total"
        ]["instanceCount"] == 1

    await wait_for(both_known, timeout_s=20, message="instances known to stats")
    nacked_before = sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "true"})
    dead_before = sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "false"})
    reasons = ("user_id", "count", "instance_id", "malformed", "foreign_instance")
    before = {r: rejected(r) for r in reasons}

    # Exactly what the gateway sent for GET /api/instances/%00/status: only the NUL is wrong.
    await s.bus.publish_event(
        batch(
            [
                {"userId": alice, "instanceId": a, "count": 4},
                {"userId": alice, "instanceId": "\x00", "count": 3},
                {"userId": bob, "instanceId": b, "count": 5},
            ]
        )
    )
    # Worse: items the batch's own schema refuses, too long ids, another user's instance.
    await s.bus.publish_event(
        batch(
            [
                {"userId": alice, "instanceId": a, "count": 1},
                {"userId": "\x00", "instanceId": None, "count": 7},
                {"userId": "x" * 65, "instanceId": None, "count": 7},
                {"instanceId": a, "count": 7},
                {"userId": bob, "instanceId": None, "count": 0},
                {"userId": bob, "instanceId": None, "count": 10**12},
                {"userId": bob, "instanceId": None, "count": "9"},
                {"userId": bob, "instanceId": "y" * 100, "count": 2},
                {"userId": bob, "instanceId": a, "count": 6},
                "garbage",
            ]
        )
    )

    async def counted() -> bool:
        return (await user_stats(s, alice))["total"]["apiCalls"] == 8 and (await user_stats(s, bob))["total"][
            "apiCalls"
        ] == 13

    await wait_for(counted, timeout_s=20, message="the good items counted")
    mine, theirs = await user_stats(s, alice), await user_stats(s, bob)
    assert [(r["instanceId"], r["apiCalls"]) for r in mine["instances"]] == [(a, 5)]  # + 3 without instance
    assert [(r["instanceId"], r["apiCalls"]) for r in theirs["instances"]] == [(b, 5)]  # + 2 + 6 without
    usage_a = (await s.ask(STATS_INSTANCE, Caller(user_id=alice), instance_id=a, period="all")).data["usage"]
    assert usage_a["apiCalls"] == 5  # bob's 6 calls "about" alice's instance are not hers
    assert {r: rejected(r) - before[r] for r in reasons} == {
        "user_id": 3,
        "count": 3,
        "instance_id": 2,
        "malformed": 1,
        "foreign_instance": 1,
    }
    # Acknowledged at the first delivery: never returned to the queue, never dead-lettered.
    assert sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "true"}) == nacked_before
    assert sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "false"}) == dead_before
    assert await s.depth(dead_letter_queue(EVENTS_QUEUE)) == 0


async def test_a_users_stats_never_show_another_users_instance(stats: Running) -> None:
    """Counters attributed to another user's instance before attribution was checked (written
    here as the old code wrote them) stay out of both users' per-instance views."""
    s = stats
    alice, bob = f"user-{new_id()}", f"user-{new_id()}"
    a = new_id()
    await s.bus.publish_event(created(alice, a, "Alice's"))
    await wait_for(lambda: _instance_count(s, alice), timeout_s=20, message="alice's instance known to stats")
    today = datetime.now(UTC).date()
    async with s.service.repo.write() as conn:
        await s.service.repo.add_usage(conn, alice, a, today, {"api_calls": 2})
        await s.service.repo.add_usage(conn, bob, a, today, {"api_calls": 6})
        await s.service.repo.add_user_daily(conn, bob, today, api_calls=6)

    theirs = await user_stats(s, bob)
    assert theirs["instances"] == [] and theirs["total"]["apiCalls"] == 6
    mine = await user_stats(s, alice)
    assert [(r["instanceId"], r["apiCalls"]) for r in mine["instances"]] == [(a, 2)]
    usage_a = (await s.ask(STATS_INSTANCE, Caller(user_id=alice), instance_id=a, period="all")).data["usage"]
    assert usage_a["apiCalls"] == 2
    assert (await s.ask(STATS_INSTANCE, Caller(user_id=bob), instance_id=a)).status == 404

    # An instance stats has never heard of: a user sees only the calls they made about it.
    unknown = new_id()
    async with s.service.repo.write() as conn:
        await s.service.repo.add_usage(conn, alice, unknown, today, {"api_calls": 1})
        await s.service.repo.add_usage(conn, bob, unknown, today, {"api_calls": 9})
    bob_view = await s.ask(STATS_INSTANCE, Caller(user_id=bob), instance_id=unknown, period="all")
    assert bob_view.data["usage"]["apiCalls"] == 9
    admin_view = await s.ask(STATS_INSTANCE, ADMIN, instance_id=unknown, period="all")
    assert admin_view.data["usage"]["apiCalls"] == 10


async def _instance_count(s: Running, user: str) -> bool:
    return (await user_stats(s, user))["total"]["instanceCount"] == 1


async def raw_request(s: Running, body: bytes) -> Reply:
    """Publish ``body`` as a request to stats (``wa.queries.stats``) and return the reply."""
    reply: Reply = await raw_bus_request(s.bus.connection, STATS_QUERY_QUEUE, body)
    return reply


async def test_a_bad_request_is_answered_400_and_never_dead_lettered(stats: Running) -> None:
    s = stats
    dead = dead_letter_queue(STATS_QUERY_QUEUE)
    nacked = {
        r: sample("wa_bus_messages_nacked_total", {"queue": STATS_QUERY_QUEUE, "requeue": r})
        for r in ("true", "false")
    }
    for body in (b"not json", b'{"name": 5}', b"\xff\xfe", b'{"name": "stats.user", "kind": "command"}'):
        reply = await raw_request(s, body)
        assert reply.status == 400 and not reply.ok, (body, reply)
    invalid = [
        await s.ask(STATS_USER, ADMIN, userId="\x00"),
        await s.ask(STATS_USER, ADMIN, userId="x" * 65),
        await s.ask(STATS_LIMITS_SET, ADMIN, userId="bad id", limits={"maxApiCalls": 5}),
        await s.ask(STATS_USER, Caller(user_id="someone"), period="fortnight"),
        await s.ask(STATS_LIMITS_SET, ADMIN, userId="someone", limits={"maxApiCalls": -1}),
        await s.ask(STATS_USER, Caller(user_id="\x00"), period="all"),
    ]
    assert [r.status for r in invalid] == [400] * len(invalid), invalid
    # An instance id that cannot exist is simply not found (as the gateway's own 404).
    assert (await s.ask(STATS_INSTANCE, ADMIN, instance_id="\x00")).status == 404
    assert (await s.ask(STATS_INSTANCE, Caller(user_id="someone"), instance_id="%00")).status == 404
    for requeue, value in nacked.items():
        assert (
            sample("wa_bus_messages_nacked_total", {"queue": STATS_QUERY_QUEUE, "requeue": requeue}) == value
        )
    assert await s.depth(dead) == 0
