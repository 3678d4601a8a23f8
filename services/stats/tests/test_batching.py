"""Counting in windows (``wa_stats.counting``): many deliveries, one transaction. A window with
duplicates counts each event once, a malformed event fails alone, a failed store write fails the
whole window (and its retry counts each event once); on both stores, then over the real RabbitMQ
and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import wait_for
from services.stats.tests.support import ADMIN, Local, Running, api_calls, counters, created, message
from wa_common.bus import SERVICE_QUEUES, dead_letter_queue
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, EventType
from wa_common.schemas.stats import STATS_LIMITS_SET, STATS_USER
from wa_common.schemas.status import LimitName
from wa_stats.counting import COUNTED, DUPLICATE, IGNORED, MalformedEvent
from wa_stats.limits import first_crossing
from wa_stats.tally import Step

EVENTS_QUEUE = SERVICE_QUEUES["stats"].name
SENT, RECEIVED = EventType.MESSAGE_SENT, EventType.MESSAGE_RECEIVED


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def windows() -> tuple[float, float]:
    """``(windows flushed, events in them)`` by the stats group commit so far."""
    labels = {"batcher": "stats_events"}
    return sample("wa_batch_size_count", labels), sample("wa_batch_size_sum", labels)


async def submit_all(local: Local, events: list[Event]) -> list[Any]:
    """Every event submitted at once, as the bus's concurrent handlers do: outcomes or errors."""
    return await asyncio.gather(*(local.service.counting.submit(e) for e in events), return_exceptions=True)


async def totals(ask: Any, user: str) -> dict[str, int]:
    reply = await ask(STATS_USER, Caller(user_id=user), period="all")
    assert reply.ok, reply
    return dict(reply.data["total"])


@asynccontextmanager
async def failing_usage_writes(engine: AsyncEngine, user: str, *, once: bool = False) -> AsyncIterator[None]:
    """A real store failure: while inside, writing a usage counter of ``user`` fails (a trigger
    raises; with ``once``, only the first time, counted by a sequence, which no rollback undoes:
    PostgreSQL only)."""
    name = f"stats_test_fail_{new_id().lower()}"
    if engine.dialect.name == "postgresql":
        fail = f"IF nextval('{name}') = 1 THEN RAISE EXCEPTION 'store down (test)'; END IF;"
        statements = [
            f"CREATE SEQUENCE {name}",
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.user_id = '{user}' THEN
                        {fail if once else "RAISE EXCEPTION 'store down (test)';"}
                    END IF;
                    RETURN NEW;
                END $$""",
            f"CREATE TRIGGER {name} BEFORE INSERT ON stats_usage_daily"
            f" FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        cleanup = [
            f"DROP TRIGGER {name} ON stats_usage_daily",
            f"DROP FUNCTION {name}()",
            f"DROP SEQUENCE {name}",
        ]
    else:
        assert not once, "failing once needs a sequence (PostgreSQL)"
        statements = [
            f"""CREATE TRIGGER {name} BEFORE INSERT ON stats_usage_daily WHEN NEW.user_id = '{user}'
                BEGIN SELECT RAISE(ABORT, 'store down (test)'); END"""
        ]
        cleanup = [f"DROP TRIGGER {name}"]
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for statement in cleanup:
                await conn.execute(text(statement))


# --- on both stores, without the bus -------------------------------------------------------------


async def test_a_window_with_duplicates_counts_each_event_once(local: Local) -> None:
    user, a, b = f"u{new_id()}", new_id(), new_id()
    now = local.clock()
    earlier = message(SENT, user, a, now, media=100)
    assert await local.handle(earlier) == COUNTED
    first, second = message(SENT, user, b, now), message(RECEIVED, user, a, now, media=50)
    batch = api_calls([(user, a, 4), (user, None, 1)], at=now)
    window = [
        first,
        created(user, a, "A", now),
        second,
        first,  # the same delivery twice in one window
        batch,
        earlier,  # counted in an earlier window
        Event(type=EventType.MESSAGE_STATUS, instance_id=a, user_id=user, data={}),
        batch,
    ]
    flushed, items = windows()
    outcomes = await submit_all(local, window)
    assert outcomes == [COUNTED, COUNTED, COUNTED, DUPLICATE, COUNTED, DUPLICATE, IGNORED, DUPLICATE]
    assert windows() == (flushed + 1, items + len(window))  # one window, one transaction
    expected = {**counters(2, 1, 1, 1, 150, 5), "instanceCount": 1}
    assert await totals(local.ask, user) == expected
    # The whole window again: every event is a duplicate now, nothing moves.
    again = await submit_all(local, window)
    assert again == [DUPLICATE] * 6 + [IGNORED, DUPLICATE]
    assert await totals(local.ask, user) == expected


async def test_owners_follow_the_windows_event_order(local: Local) -> None:
    """An event without a user counts for its instance's owner as the window's earlier events
    left it (the replica is read once, and again after a write)."""
    user, a = f"u{new_id()}", new_id()
    now = local.clock()
    anonymous = [message(RECEIVED, user, a, now).model_copy(update={"user_id": None}) for _ in range(2)]
    outcomes = await submit_all(local, [anonymous[0], created(user, a, "A", now), anonymous[1]])
    assert outcomes == [COUNTED] * 3
    assert (await totals(local.ask, user))["messagesReceived"] == 1  # the first had no known owner


async def test_a_malformed_event_is_refused_alone(local: Local) -> None:
    user, a = f"u{new_id()}", new_id()
    now = local.clock()
    bad = Event(type=SENT, instance_id=a, user_id=user, data={"hasMedia": "x"})
    nameless = Event(type=EventType.USER_CREATED, data={"userId": ""})
    good = [message(SENT, user, a, now), message(SENT, user, a, now)]
    outcomes = await submit_all(local, [good[0], bad, nameless, good[1]])
    assert outcomes[0] == COUNTED and outcomes[3] == COUNTED
    assert isinstance(outcomes[1], MalformedEvent) and isinstance(outcomes[2], MalformedEvent)
    assert "without userId" in str(outcomes[2])
    assert (await totals(local.ask, user))["messagesSent"] == 2
    # Its id was not recorded: it is refused again, never taken for a duplicate.
    with pytest.raises(MalformedEvent):
        await local.service.counting.submit(bad)


async def test_a_failed_store_write_fails_the_whole_window(local: Local) -> None:
    user, other, a, b = f"u{new_id()}", f"u{new_id()}", new_id(), new_id()
    now = local.clock()
    window = [
        message(SENT, other, b, now),
        Event(type=EventType.USER_CREATED, user_id=other, data={"userId": other, "active": True}),
        message(SENT, user, a, now),
        message(RECEIVED, user, a, now, media=10),
    ]
    before = (await local.ask("stats.system", ADMIN)).data
    async with failing_usage_writes(local.service.repo.engine, user):
        outcomes = await submit_all(local, window)
    assert all(isinstance(o, DBAPIError) for o in outcomes), outcomes  # every delivery fails
    after = (await local.ask("stats.system", ADMIN)).data
    assert after["users"] == before["users"] and after["usage"] == before["usage"]  # nothing kept
    # Redelivered: each event counts once.
    assert await submit_all(local, window) == [COUNTED] * 4
    assert await submit_all(local, window) == [DUPLICATE] * 4
    assert await totals(local.ask, user) == {**counters(1, 1, 0, 1, 10), "instanceCount": 0}
    assert (await totals(local.ask, other))["messagesSent"] == 1


async def test_a_limit_crossed_inside_a_window_is_announced_by_the_crossing_event(local: Local) -> None:
    user, a, b = f"u{new_id()}", new_id(), new_id()
    now = local.clock()
    await local.ask(STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 3, "maxApiCalls": 10})
    sends = [message(SENT, user, a, now), message(SENT, user, b, now), message(SENT, user, b, now)]
    outcomes = await submit_all(
        local, [*sends, message(SENT, user, a, now), api_calls([(user, a, 9)], at=now)]
    )
    assert outcomes == [COUNTED] * 5
    assert len(local.published) == 1  # 9 API calls of 10: not yet
    event = local.published[0]
    assert event.instance_id == b and event.meta["limit"] == "maxMessagesSent"  # the 3rd send's
    assert event.data["usage"] == {"messagesSent": 4, "apiCalls": 9}  # the day's, after the window
    # A user across already: the window's first event announces, once per period.
    await submit_all(local, [api_calls([(user, None, 1)], at=now), message(SENT, user, a, now)])
    assert [e.meta["limit"] for e in local.published] == ["maxMessagesSent", "maxApiCalls"]
    assert local.published[1].instance_id is None


def test_first_crossing() -> None:
    steps = [Step(0, 2, "a"), Step(1, 1, "b"), Step(2, 3, "c")]
    daily, instances = LimitName.MAX_MESSAGES_SENT, LimitName.MAX_INSTANCES
    assert first_crossing(daily, 6, 3, steps) == steps[1]  # 0 → 2 → 3 (used up)
    assert first_crossing(daily, 16, 3, steps) == steps[0]  # 10 before the window
    assert first_crossing(daily, 6, 7, steps) is None
    assert first_crossing(daily, 6, None, steps) is None
    assert first_crossing(instances, 6, 3, steps) == steps[2]  # above the maximum: 3 → 6
    assert first_crossing(daily, 6, 3, []) is None


# --- over the real RabbitMQ and PostgreSQL ------------------------------------------------------


def nacked(requeue: str) -> float:
    return sample("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": requeue})


async def test_over_the_bus_a_failed_window_is_redelivered_and_a_malformed_event_dead_lettered(
    stats: Running,
) -> None:
    s = stats
    user, a = f"u{new_id()}", new_id()
    sends = [message(SENT, user, a) for _ in range(5)]
    receipts = [message(RECEIVED, user, a, media=7) for _ in range(3)]
    bad = Event(type=SENT, instance_id=a, user_id=user, data={"hasMedia": "x"})
    requeued, dead = nacked("true"), nacked("false")
    async with failing_usage_writes(s.service.repo.engine, user, once=True):
        for event in [*sends, bad, *receipts]:
            await s.bus.publish_event(event)

        async def counted() -> bool:
            total = await totals(s.ask, user)
            return total["messagesSent"] == 5 and total["messagesReceived"] == 3

        await wait_for(counted, timeout_s=30, message="every event counted after the failed window")
        await wait_for(lambda: nacked("false") - dead >= 1, timeout_s=10, message="the malformed one refused")
    assert await totals(s.ask, user) == {**counters(5, 3, 0, 3, 21), "instanceCount": 0}
    assert nacked("true") - requeued >= 1  # the failed window's deliveries went back to the queue
    assert nacked("false") - dead == 1  # only the malformed event was dead-lettered
    # Take the dead letter back out (the queue is shared by this session's tests).
    channel = await s.bus.connection.channel()
    try:
        queue = await channel.declare_queue(dead_letter_queue(EVENTS_QUEUE), passive=True)
        letter = await wait_for(lambda: queue.get(fail=False), timeout_s=10, message="the dead letter")
        assert Event.from_bytes(letter.body).id == bad.id
        await letter.ack()
    finally:
        await channel.close()
    assert await s.depth(dead_letter_queue(EVENTS_QUEUE)) == 0


async def test_a_window_costs_the_same_statements_as_one_event(local: Local) -> None:
    """Counters, ids and limits cost a fixed number of statements per window, not per event."""
    engine = local.service.repo.engine.sync_engine
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    user = f"u{new_id()}"
    instances = [new_id() for _ in range(4)]
    now = local.clock()
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        assert await submit_all(local, [message(SENT, user, instances[0], now)]) == [COUNTED]
        alone = len(statements)
        statements.clear()
        window = [message(SENT, user, instances[i % 4], now) for i in range(40)]
        assert await submit_all(local, window) == [COUNTED] * 40
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == alone, statements
    assert alone <= 5, statements  # ids, usage rows, day totals, limits (+ SQLite's BEGIN)
