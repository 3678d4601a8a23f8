"""Limits (``wa_stats.limits``) on both stores, without the bus: one ``limit_exceeded`` per
user, limit and period, the blocks in force, the outbox."""

from __future__ import annotations

from datetime import timedelta

from services.stats.tests.support import ADMIN, Local, api_calls, created, message
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, EventType
from wa_common.schemas.stats import STATS_LIMITS_GET, STATS_LIMITS_SET, STATS_LIMITS_STATE

DAY_S = 86400


async def test_limits_one_event_per_period_and_reset(local: Local) -> None:
    clock, published = local.clock, local.published
    user = f"u{new_id()}"
    inst = new_id()
    me = Caller(user_id=user)
    set_reply = await local.ask(
        STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 5, "maxApiCalls": 10}
    )
    assert set_reply.ok, set_reply
    assert set_reply.data == {
        "userId": user,
        "limits": {"maxMessagesSent": 5, "maxApiCalls": 10, "maxInstances": None},
        "state": [],
    }
    assert (await local.ask(STATS_LIMITS_SET, me, userId=user, limits={})).status == 403
    assert (await local.ask(STATS_LIMITS_GET, me)).data["limits"]["maxMessagesSent"] == 5

    sends = [message(EventType.MESSAGE_SENT, user, inst, clock()) for _ in range(8)]
    for e in sends[:4]:
        await local.handle(e)
    assert published == []
    assert (await local.ask(STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}
    await local.handle(sends[4])  # the 5th uses the quota up
    assert len(published) == 1
    event = published[0]
    assert event.type == EventType.LIMIT_EXCEEDED and event.user_id == user and event.instance_id == inst
    assert event.routing_key == f"limit_exceeded.{inst}"
    assert event.data == {
        "instanceId": inst,
        "exceededLimits": ["maxMessagesSent"],
        "usage": {"messagesSent": 5, "apiCalls": 0},
    }
    assert event.meta == {
        "limit": "maxMessagesSent",
        "max": 5,
        "periodStart": "2030-03-15T00:00:00.000Z",
        "resetsAt": "2030-03-16T00:00:00.000Z",
    }
    for e in [*sends[5:], sends[4]]:
        await local.handle(e)
    assert len(published) == 1
    state = (await local.ask(STATS_LIMITS_STATE, me, userId=user)).data
    assert state == {
        "blocked": [
            {
                "userId": user,
                "limit": "maxMessagesSent",
                "max": 5,
                "usage": 8,
                "resetsAt": "2030-03-16T00:00:00.000Z",
            }
        ]
    }
    everyone = (await local.ask(STATS_LIMITS_STATE, ADMIN)).data["blocked"]
    assert any(b["userId"] == user for b in everyone)
    assert (await local.ask(STATS_LIMITS_STATE, me)).status == 403

    # API calls: a batch crossing the limit announces once, with no instance.
    await local.handle(api_calls([(user, None, 11)], at=clock()))
    assert len(published) == 2
    assert published[1].instance_id is None and published[1].data["exceededLimits"] == ["maxApiCalls"]
    assert published[1].data["usage"] == {"messagesSent": 8, "apiCalls": 11}

    # Raising the limit lifts the block at once; lowering it again announces again.
    lifted = await local.ask(STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 100})
    assert lifted.data["state"] == []
    lowered = await local.ask(STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 2})
    assert [b["limit"] for b in lowered.data["state"]] == ["maxMessagesSent"]
    assert len(published) == 3 and published[2].instance_id is None

    # The next UTC day: nothing blocked; a new crossing that day announces again.
    clock.advance(DAY_S)
    assert (await local.ask(STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}
    for _ in range(3):
        await local.handle(message(EventType.MESSAGE_SENT, user, inst, clock()))
    assert len(published) == 4 and published[3].meta["resetsAt"] == "2030-03-17T00:00:00.000Z"
    # A late event of a day that is over counts but announces nothing.
    await local.handle(message(EventType.MESSAGE_SENT, user, inst, clock() - timedelta(days=3)))
    assert len(published) == 4


async def test_max_instances(local: Local) -> None:
    clock, published = local.clock, local.published
    user = f"u{new_id()}"
    await local.ask(STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxInstances": 1})
    first, second = new_id(), new_id()
    await local.handle(created(user, first, "a", clock()))
    state = (await local.ask(STATS_LIMITS_STATE, ADMIN, userId=user)).data["blocked"]
    assert state == [{"userId": user, "limit": "maxInstances", "max": 1, "usage": 1, "resetsAt": None}]
    assert published == []
    await local.handle(created(user, second, "b", clock()))
    assert len(published) == 1 and published[0].meta["limit"] == "maxInstances"
    assert published[0].meta["resetsAt"] is None
    await local.handle(
        Event(
            type=EventType.INSTANCE_DELETED,
            instance_id=second,
            user_id=user,
            data={"instanceId": second, "userId": user},
        )
    )
    await local.handle(created(user, new_id(), "c", clock()))
    assert len(published) == 2


async def test_outbox_republishes_an_event_whose_publication_failed(local: Local) -> None:
    limits, published = local.service.limits, local.published
    user, inst = f"u{new_id()}", new_id()
    await local.ask(STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 1})
    assert published == []
    local.bus.down = True  # the broker is unreachable
    await local.handle(message(EventType.MESSAGE_SENT, user, inst, local.clock()))
    assert published == []
    local.bus.down = False
    assert await limits.flush_outbox() == 0  # too young: its handler may still be publishing
    local.clock.advance(20)
    assert await limits.flush_outbox() == 1
    assert len(published) == 1 and published[0].meta["limit"] == "maxMessagesSent"
    assert await limits.flush_outbox() == 0
