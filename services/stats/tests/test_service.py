"""StatsService against the real stores (SQLite file and the test PostgreSQL), without the bus.

The bus publisher is replaced by a list (the service's ``publish`` seam); the bus path is covered
by ``test_integration.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Event, EventType, Query
from wa_common.schemas.stats import (
    STATS_INSTANCE,
    STATS_LIMITS_GET,
    STATS_LIMITS_SET,
    STATS_LIMITS_STATE,
    STATS_SYSTEM,
    STATS_USER,
)
from wa_stats.periods import InvalidPeriod, iso_utc, next_day_start, period_start
from wa_stats.repository import StatsRepository
from wa_stats.service import COUNTED, DUPLICATE, IGNORED, StatsService


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


# --- periods (pure) -------------------------------------------------------------------------


def test_periods_are_calendar_aligned_utc() -> None:
    now = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # a Friday
    assert period_start("today", now) == date(2026, 11, 20)
    assert period_start("week", now) == date(2026, 11, 16)  # Monday
    assert period_start("month", now) == date(2026, 11, 1)
    assert period_start("year", now) == date(2026, 1, 1)
    assert period_start("all", now) is None
    monday = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)
    assert period_start("week", monday) == date(2026, 11, 16)
    assert period_start("week", monday - timedelta(microseconds=1)) == date(2026, 11, 9)
    # A non-UTC clock value is converted first.
    from datetime import timezone

    plus3 = datetime(2026, 11, 21, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert period_start("today", plus3) == date(2026, 11, 20)
    assert next_day_start(now) == datetime(2026, 11, 21, tzinfo=UTC)
    assert iso_utc(datetime(2023, 1, 1, tzinfo=UTC)) == "2023-01-01T00:00:00.000Z"
    with pytest.raises(InvalidPeriod, match="must be one of week, month, year, all"):
        period_start("today", now, ("week", "month", "year", "all"))


# --- the service on both stores ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> str:
    url = f"sqlite:///{tmp_path}/stats.db" if request.param == "sqlite" else postgres_url
    await asyncio.to_thread(upgrade, "wa_stats", url)
    return url


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[tuple[StatsService, Clock, list[Event]]]:
    engine = create_engine(db_url)
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    clock = Clock(datetime(2030, 3, 15, 10, 0, tzinfo=UTC))  # a Friday
    yield StatsService(StatsRepository(engine), publish, now=clock), clock, published
    await engine.dispose()


def msg(kind: str, user: str, instance: str, at: datetime, *, media: int | None = None) -> Event:
    data = {"instanceId": instance, "messageId": new_id(), "body": "hi", "hasMedia": media is not None}
    return Event(
        type=kind,
        instance_id=instance,
        user_id=user,
        occurred_at=at,
        data=data,
        meta={"mediaSize": media, "mimeType": "image/png"} if media is not None else {},
    )


def snapshot(
    user: str, instance: str, name: str, at: datetime, kind: str = EventType.INSTANCE_CREATED
) -> Event:
    return Event(
        type=kind,
        instance_id=instance,
        user_id=user,
        occurred_at=at,
        data={"instanceId": instance, "userId": user, "name": name, "updatedAt": iso_utc(at)},
    )


def usage(gateway: str, day: date, counts: list[tuple[str, str | None, int]], at: datetime) -> Event:
    return Event(
        type=EventType.API_USAGE,
        occurred_at=at,
        data={
            "gateway": gateway,
            "day": day.isoformat(),
            "counts": [{"userId": u, "instanceId": i, "count": c} for u, i, c in counts],
        },
    )


async def ask(service: StatsService, name: str, caller: Caller | None, **payload: object):
    instance_id = payload.pop("instance_id", None)
    return await service.answer(
        Query(name=name, caller=caller, instance_id=instance_id, payload=dict(payload))
    )


async def test_counts_shapes_periods_and_idempotency(env) -> None:
    service, clock, _ = env
    now = clock()
    user, other = f"u{new_id()}", f"u{new_id()}"
    a, b = new_id(), new_id()
    last_month = now - timedelta(days=40)
    events = [
        snapshot(user, a, "Primary", now - timedelta(days=60)),
        snapshot(user, b, "Second", now - timedelta(days=60)),
        msg(EventType.MESSAGE_SENT, user, a, now),
        msg(EventType.MESSAGE_SENT, user, a, now, media=1000),
        msg(EventType.MESSAGE_SENT, user, b, now - timedelta(days=1)),
        msg(EventType.MESSAGE_RECEIVED, user, a, now, media=500),
        msg(EventType.MESSAGE_RECEIVED, user, a, last_month),
        usage("gw-1", now.date(), [(user, a, 7), (user, None, 3), (other, None, 2)], now),
        Event(
            type=EventType.WEBHOOK_DELIVERED,
            instance_id=a,
            user_id=user,
            occurred_at=now,
            data={"instanceId": a, "deliveryId": new_id(), "eventId": new_id(), "event": "x", "attempts": 1},
        ),
        Event(type=EventType.MESSAGE_STATUS, instance_id=a, user_id=user, data={}),
    ]
    outcomes = [await service.handle_event(e) for e in events]
    assert outcomes == [COUNTED] * 9 + [IGNORED]
    # Replaying every event changes nothing.
    assert [await service.handle_event(e) for e in events[:-1]] == [DUPLICATE] * 9

    me = Caller(user_id=user)
    month = await ask(service, STATS_USER, me)
    assert month.ok, month
    assert month.data["total"] == {
        "messagesSent": 3,
        "messagesReceived": 1,
        "mediaSent": 1,
        "mediaReceived": 1,
        "totalMediaSize": 1500,
        "apiCalls": 10,
        "webhookSent": 1,
        "instanceCount": 2,
    }
    rows = {r["instanceId"]: r for r in month.data["instances"]}
    assert set(rows) == {a, b}
    assert rows[a] == {
        "instanceId": a,
        "name": "Primary",
        "messagesSent": 2,
        "messagesReceived": 1,
        "mediaSent": 1,
        "mediaReceived": 1,
        "totalMediaSize": 1500,
        "apiCalls": 7,
        "webhookSent": 1,
    }
    everything = await ask(service, STATS_USER, me, period="all")
    assert everything.data["total"]["messagesReceived"] == 2
    # "today" (an extension for the dashboard): b's send was yesterday, a's receipt last month.
    today_total = (await ask(service, STATS_USER, me, period="today")).data["total"]
    assert (today_total["messagesSent"], today_total["messagesReceived"]) == (2, 1)

    today = await ask(service, STATS_INSTANCE, me, instance_id=a)
    assert today.ok, today
    assert today.data == {
        "usage": {
            "messagesSent": 2,
            "messagesReceived": 1,
            "mediaSent": 1,
            "mediaReceived": 1,
            "totalMediaSize": 1500,
            "apiCalls": 7,
            "webhookSent": 1,
            "dailyStats": [
                {
                    "date": "2030-03-15T00:00:00.000Z",
                    "messagesSent": 2,
                    "messagesReceived": 1,
                    "mediaSent": 1,
                    "mediaReceived": 1,
                }
            ],
        }
    }
    all_a = await ask(service, STATS_INSTANCE, me, instance_id=a, period="all")
    assert [d["date"] for d in all_a.data["usage"]["dailyStats"]] == [
        iso_utc(datetime.combine(last_month.date(), datetime.min.time(), tzinfo=UTC)),
        "2030-03-15T00:00:00.000Z",
    ]
    week_b = await ask(service, STATS_INSTANCE, me, instance_id=b, period="week")
    assert week_b.data["usage"]["messagesSent"] == 1  # Thursday is in the week starting Monday

    # Ownership, roles and validation.
    assert (await ask(service, STATS_INSTANCE, Caller(user_id=other), instance_id=a)).status == 404
    assert (await ask(service, STATS_INSTANCE, me, instance_id=new_id())).status == 404
    assert (await ask(service, STATS_INSTANCE, Caller(user_id="x", role="admin"), instance_id=a)).ok
    bad = await ask(service, STATS_USER, me, period="fortnight")
    assert bad.status == 400 and "today, week, month, year, all" in (bad.error or "")
    assert (await ask(service, STATS_INSTANCE, me, instance_id=a, period="year")).status == 400
    assert (await ask(service, STATS_SYSTEM, me)).status == 403
    assert (await ask(service, STATS_USER, me, userId=other)).status == 403
    assert (await ask(service, "stats.nope", me)).status == 400


async def test_system_stats_instances_and_users(env) -> None:
    service, clock, _ = env
    now = clock()
    admin = Caller(user_id="admin", role="admin")
    before = (await ask(service, STATS_SYSTEM, admin)).data
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
        snapshot(u1, i1, "one", t),
        snapshot(u1, i2, "two", t),
        snapshot(u2, i3, "three", t),
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
        msg(EventType.MESSAGE_SENT, u1, i1, now),
    ]
    for e in events:
        await service.handle_event(e)
    # An older "connected" arriving late does not override the newer "disconnected".
    late = Event(type=EventType.CONNECTED, instance_id=i2, user_id=u1, occurred_at=t, data={"instanceId": i2})
    await service.handle_event(late)
    after = (await ask(service, STATS_SYSTEM, admin)).data
    assert after["instances"]["total"] - before["instances"]["total"] == 2
    assert after["instances"]["active"] - before["instances"]["active"] == 1
    assert after["users"]["total"] - before["users"]["total"] == 2
    assert after["users"]["active"] - before["users"]["active"] == 1
    assert after["usage"]["messagesSent"] - before["usage"]["messagesSent"] == 1
    assert set(after["usage"]) == {
        "messagesSent",
        "messagesReceived",
        "mediaSent",
        "mediaReceived",
        "totalMediaSize",
        "apiCalls",
        "webhookSent",
    }
    # The deleted instance is gone for its owner.
    assert (await ask(service, STATS_INSTANCE, Caller(user_id=u2), instance_id=i3)).status == 404


async def test_limits_one_event_per_period_and_reset(env) -> None:
    service, clock, published = env
    admin = Caller(user_id="admin", role="admin")
    user = f"u{new_id()}"
    inst = new_id()
    me = Caller(user_id=user)
    set_reply = await ask(
        service, STATS_LIMITS_SET, admin, userId=user, limits={"maxMessagesSent": 5, "maxApiCalls": 10}
    )
    assert set_reply.ok, set_reply
    assert set_reply.data == {
        "userId": user,
        "limits": {"maxMessagesSent": 5, "maxApiCalls": 10, "maxInstances": None},
        "state": [],
    }
    assert (await ask(service, STATS_LIMITS_SET, me, userId=user, limits={})).status == 403
    assert (await ask(service, STATS_LIMITS_GET, me)).data["limits"]["maxMessagesSent"] == 5

    sends = [msg(EventType.MESSAGE_SENT, user, inst, clock()) for _ in range(8)]
    for e in sends[:4]:
        await service.handle_event(e)
    assert published == []
    assert (await ask(service, STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}
    await service.handle_event(sends[4])  # the 5th uses the quota up
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
        await service.handle_event(e)
    assert len(published) == 1
    state = (await ask(service, STATS_LIMITS_STATE, me, userId=user)).data
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
    everyone = (await ask(service, STATS_LIMITS_STATE, admin)).data["blocked"]
    assert any(b["userId"] == user for b in everyone)
    assert (await ask(service, STATS_LIMITS_STATE, me)).status == 403

    # API calls: a batch crossing the limit announces once, with no instance.
    await service.handle_event(usage("gw", clock().date(), [(user, None, 11)], clock()))
    assert len(published) == 2
    assert published[1].instance_id is None and published[1].data["exceededLimits"] == ["maxApiCalls"]
    assert published[1].data["usage"] == {"messagesSent": 8, "apiCalls": 11}

    # Raising the limit lifts the block at once; lowering it again announces again.
    lifted = await ask(service, STATS_LIMITS_SET, admin, userId=user, limits={"maxMessagesSent": 100})
    assert lifted.data["state"] == []
    lowered = await ask(service, STATS_LIMITS_SET, admin, userId=user, limits={"maxMessagesSent": 2})
    assert [b["limit"] for b in lowered.data["state"]] == ["maxMessagesSent"]
    assert len(published) == 3 and published[2].instance_id is None

    # The next UTC day: nothing blocked; a new crossing that day announces again.
    clock.moment = clock.moment + timedelta(days=1)
    assert (await ask(service, STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}
    for _ in range(3):
        await service.handle_event(msg(EventType.MESSAGE_SENT, user, inst, clock()))
    assert len(published) == 4 and published[3].meta["resetsAt"] == "2030-03-17T00:00:00.000Z"
    # A late event of a day that is over counts but announces nothing.
    await service.handle_event(msg(EventType.MESSAGE_SENT, user, inst, clock() - timedelta(days=3)))
    assert len(published) == 4


async def test_max_instances(env) -> None:
    service, clock, published = env
    admin = Caller(user_id="admin", role="admin")
    user = f"u{new_id()}"
    await ask(service, STATS_LIMITS_SET, admin, userId=user, limits={"maxInstances": 1})
    first, second = new_id(), new_id()
    await service.handle_event(snapshot(user, first, "a", clock()))
    state = (await ask(service, STATS_LIMITS_STATE, admin, userId=user)).data["blocked"]
    assert state == [{"userId": user, "limit": "maxInstances", "max": 1, "usage": 1, "resetsAt": None}]
    assert published == []
    await service.handle_event(snapshot(user, second, "b", clock()))
    assert len(published) == 1 and published[0].meta["limit"] == "maxInstances"
    assert published[0].meta["resetsAt"] is None
    await service.handle_event(
        Event(
            type=EventType.INSTANCE_DELETED,
            instance_id=second,
            user_id=user,
            data={"instanceId": second, "userId": user},
        )
    )
    await service.handle_event(snapshot(user, new_id(), "c", clock()))
    assert len(published) == 2


async def test_prune_forgets_old_ids(env) -> None:
    service, clock, _ = env
    event = msg(EventType.MESSAGE_RECEIVED, f"u{new_id()}", new_id(), clock())
    assert await service.handle_event(event) == COUNTED
    clock.moment = clock.moment + timedelta(days=8)
    pruned, _ = await service.prune()
    assert pruned >= 1


async def test_outbox_republishes_an_event_whose_publication_failed(env) -> None:
    service, clock, published = env
    admin = Caller(user_id="admin", role="admin")
    user, inst = f"u{new_id()}", new_id()
    await ask(service, STATS_LIMITS_SET, admin, userId=user, limits={"maxMessagesSent": 1})
    assert published == []
    real_publish = service.publish

    async def broken(event: Event) -> None:
        raise ConnectionError("broker unreachable")

    service.publish = broken
    await service.handle_event(msg(EventType.MESSAGE_SENT, user, inst, clock()))
    assert published == []
    service.publish = real_publish
    assert await service.flush_outbox() == 0  # too young: its handler may still be publishing
    clock.moment = clock.moment + timedelta(seconds=20)
    assert await service.flush_outbox() == 1
    assert len(published) == 1 and published[0].meta["limit"] == "maxMessagesSent"
    assert await service.flush_outbox() == 0
