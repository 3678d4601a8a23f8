"""Counting events (``wa_stats.counting``) on both stores, without the bus: each event counts
once, into the right counters and replicas."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.stats.tests.support import ADMIN, Local, counters, created, message, seeded_usage
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, EventType
from wa_common.schemas.stats import STATS_INSTANCE, STATS_SYSTEM, STATS_USER
from wa_stats.counting import COUNTED, DUPLICATE, IGNORED, MalformedEvent


async def test_each_event_counts_once(local: Local) -> None:
    seed = seeded_usage(local.clock())
    outcomes = [await local.handle(e) for e in seed.events]
    assert outcomes == [COUNTED] * 9 + [IGNORED]
    # Replaying every event changes nothing.
    assert [await local.handle(e) for e in seed.events[:-1]] == [DUPLICATE] * 9

    month = await local.ask(STATS_USER, Caller(user_id=seed.user))
    assert month.ok, month
    assert month.data["total"] == {**counters(3, 1, 1, 1, 1500, 10, 1), "instanceCount": 2}


async def test_system_stats_instances_and_users(local: Local) -> None:
    now = local.clock()
    before = (await local.ask(STATS_SYSTEM, ADMIN)).data
    u1, u2 = f"u{new_id()}", f"u{new_id()}"
    i1, i2, i3 = new_id(), new_id(), new_id()
    t = now - timedelta(minutes=10)
    events = [
        Event(type=EventType.USER_CREATED, user_id=u1, occurred_at=t, data={"userId": u1, "active": True}),
        Event(type=EventType.USER_CREATED, user_id=u2, occurred_at=t, data={"userId": u2, "active": True}),
        Event(
            type=EventType.USER_UPDATED,
            user_id=u2,
            occurred_at=t + timedelta(seconds=1),
            data={"userId": u2, "active": False},
        ),
        created(u1, i1, "one", t),
        created(u1, i2, "two", t),
        created(u2, i3, "three", t),
        Event(type=EventType.CONNECTED, instance_id=i1, user_id=u1, occurred_at=t, data={"instanceId": i1}),
        Event(type=EventType.CONNECTED, instance_id=i2, user_id=u1, occurred_at=t, data={"instanceId": i2}),
        Event(
            type=EventType.DISCONNECTED,
            instance_id=i2,
            user_id=u1,
            occurred_at=t + timedelta(seconds=5),
            data={"instanceId": i2, "reason": "x", "willReconnect": True},
        ),
        Event(
            type=EventType.INSTANCE_DELETED,
            instance_id=i3,
            user_id=u2,
            occurred_at=t,
            data={"instanceId": i3, "userId": u2},
        ),
        message(EventType.MESSAGE_SENT, u1, i1, now),
    ]
    for e in events:
        await local.handle(e)
    # An older "connected" arriving late does not override the newer "disconnected".
    late = Event(type=EventType.CONNECTED, instance_id=i2, user_id=u1, occurred_at=t, data={"instanceId": i2})
    await local.handle(late)
    after = (await local.ask(STATS_SYSTEM, ADMIN)).data
    assert after["instances"]["total"] - before["instances"]["total"] == 2
    assert after["instances"]["active"] - before["instances"]["active"] == 1
    assert after["users"]["total"] - before["users"]["total"] == 2
    assert after["users"]["active"] - before["users"]["active"] == 1
    assert after["usage"]["messagesSent"] - before["usage"]["messagesSent"] == 1
    assert set(after["usage"]) == set(counters())
    # The deleted instance is gone for its owner.
    assert (await local.ask(STATS_INSTANCE, Caller(user_id=u2), instance_id=i3)).status == 404


async def test_data_that_is_not_its_model_is_malformed_and_counts_nothing(local: Local) -> None:
    user, instance = f"u{new_id()}", new_id()
    bad = Event(type=EventType.MESSAGE_SENT, instance_id=instance, user_id=user, data={"hasMedia": "x"})
    with pytest.raises(MalformedEvent):
        await local.handle(bad)
    nameless = Event(type=EventType.USER_CREATED, data={"userId": ""})
    with pytest.raises(MalformedEvent, match="without userId"):
        await local.handle(nameless)
    # Rolled back with its transaction: the id was not recorded, nothing was counted.
    total = (await local.ask(STATS_USER, Caller(user_id=user), period="all")).data["total"]
    assert total == {**counters(), "instanceCount": 0}


def test_the_stats_queue_is_bound_to_exactly_the_types_stats_handles() -> None:
    """``wa.events.stats`` is bound by type (DESIGN.md: each queue only to the event types its
    service uses); a handler added without its binding would never see an event."""
    from wa_common.bus.topology import SERVICE_QUEUES, STATS_EVENT_TYPES
    from wa_stats.handlers import EventHandlers

    handled = set(EventHandlers(None, None).by_type)  # type: ignore[arg-type]
    assert handled == set(STATS_EVENT_TYPES)
    keys = {key for _, key in SERVICE_QUEUES["stats"].bindings}
    assert keys == {f"{t}.#" for t in handled}
