"""The gateways' usage batches item by item (``wa_stats.usage_batch``): bad items among good
ones never poison stats. In memory, then through the service on the real RabbitMQ and
PostgreSQL."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from conftest import wait_for
from services.stats.tests.support import Running, api_calls, created
from wa_common.bus import SERVICE_QUEUES, dead_letter_queue
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, EventType
from wa_common.schemas.stats import STATS_INSTANCE, STATS_USER
from wa_stats.repository import InstanceInfo
from wa_stats.usage_batch import MAX_USAGE_COUNT, attributed, screened

EVENTS_QUEUE = SERVICE_QUEUES["stats"].name
REASONS = ("user_id", "count", "instance_id", "malformed", "foreign_instance")


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected() -> dict[str, float]:
    return {r: sample("wa_stats_api_usage_items_rejected_total", {"reason": r}) for r in REASONS}


def rejected_since(before: dict[str, float]) -> dict[str, float]:
    """Items refused since ``before`` (a :func:`rejected`), by reason."""
    now = rejected()
    return {r: now[r] - before[r] for r in REASONS}


def test_items_are_kept_dropped_or_de_attributed_one_by_one() -> None:
    alice, bob, a = new_id(), new_id(), new_id()
    before = rejected()
    event = api_calls(
        [
            (alice, a, 4),
            (alice, "\x00", 3),
            (bob, None, MAX_USAGE_COUNT + 1),
            (bob, None, True),
            ("x" * 65, None, 1),
            (bob, a, 6),
            [bob, a, 1],
        ]
    )
    batch = screened(event)
    assert [(c.user_id, c.instance_id, c.count) for c in batch.counts] == [
        (alice, a, 4),
        (alice, None, 3),
        (bob, a, 6),
    ]
    known = {a: InstanceInfo(instance_id=a, user_id=alice, name="", deleted=False, connected=True)}
    assert [(c.user_id, c.instance_id, c.count) for c in attributed(event, batch, known)] == [
        (alice, a, 4),
        (alice, None, 3),
        (bob, None, 6),  # a is alice's
    ]
    assert rejected_since(before) == dict(user_id=1, count=2, instance_id=1, malformed=1, foreign_instance=1)
    undated = Event(type=EventType.API_USAGE, data={"day": "someday", "counts": []})
    assert screened(undated).day == undated.occurred_at.date().isoformat()


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
    before = rejected()

    # Exactly what the gateway sent for GET /api/instances/%00/status: only the NUL is wrong.
    await s.bus.publish_event(api_calls([(alice, a, 4), (alice, "\x00", 3), (bob, b, 5)]))
    # Worse: items the batch's own schema refuses, too long ids, another user's instance.
    await s.bus.publish_event(
        api_calls(
            [
                (alice, a, 1),
                ("\x00", None, 7),
                ("x" * 65, None, 7),
                {"instanceId": a, "count": 7},
                (bob, None, 0),
                (bob, None, 10**12),
                (bob, None, "9"),
                (bob, "y" * 100, 2),
                (bob, a, 6),
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
    assert rejected_since(before) == dict(user_id=3, count=3, instance_id=2, malformed=1, foreign_instance=1)
    # Acknowledged at the first delivery: never returned to the queue, never dead-lettered.
    assert sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "true"}) == nacked_before
    assert sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "false"}) == dead_before
    assert await s.depth(dead_letter_queue(EVENTS_QUEUE)) == 0
