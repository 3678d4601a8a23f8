"""Answering queries (``wa_stats.queries`` behind the router of ``wa_stats.consumers``): reply
shapes, periods, who may see what."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import wait_for
from services.stats.tests.support import ADMIN, Local, Running, counters, created, seeded_usage
from wa_common.ids import new_id
from wa_common.schemas import Caller
from wa_common.schemas.stats import STATS_INSTANCE, STATS_SYSTEM, STATS_USER
from wa_common.schemas.wire import iso_ms


async def test_shapes_periods_and_access(local: Local) -> None:
    seed = seeded_usage(local.clock())
    user, other, a, b = seed.user, seed.other, seed.a, seed.b
    for event in seed.events:
        await local.handle(event)

    me = Caller(user_id=user)
    month = await local.ask(STATS_USER, me)
    rows = {r["instanceId"]: r for r in month.data["instances"]}
    assert set(rows) == {a, b}
    assert rows[a] == {"instanceId": a, "name": "Primary", **counters(2, 1, 1, 1, 1500, 7, 1)}
    everything = await local.ask(STATS_USER, me, period="all")
    assert everything.data["total"]["messagesReceived"] == 2
    # "today" (an extension for the dashboard): b's send was yesterday, a's receipt last month.
    today_total = (await local.ask(STATS_USER, me, period="today")).data["total"]
    assert (today_total["messagesSent"], today_total["messagesReceived"]) == (2, 1)

    today = await local.ask(STATS_INSTANCE, me, instance_id=a)
    assert today.ok, today
    daily = {
        "date": "2030-03-15T00:00:00.000Z",
        "messagesSent": 2,
        "messagesReceived": 1,
        "mediaSent": 1,
        "mediaReceived": 1,
    }
    assert today.data == {"usage": {**counters(2, 1, 1, 1, 1500, 7, 1), "dailyStats": [daily]}}
    all_a = await local.ask(STATS_INSTANCE, me, instance_id=a, period="all")
    assert [d["date"] for d in all_a.data["usage"]["dailyStats"]] == [
        iso_ms(datetime.combine(seed.last_month.date(), datetime.min.time(), tzinfo=UTC)),
        "2030-03-15T00:00:00.000Z",
    ]
    week_b = await local.ask(STATS_INSTANCE, me, instance_id=b, period="week")
    assert week_b.data["usage"]["messagesSent"] == 1  # Thursday is in the week starting Monday

    # Ownership, roles and validation.
    assert (await local.ask(STATS_INSTANCE, Caller(user_id=other), instance_id=a)).status == 404
    assert (await local.ask(STATS_INSTANCE, me, instance_id=new_id())).status == 404
    assert (await local.ask(STATS_INSTANCE, Caller(user_id="x", role="admin"), instance_id=a)).ok
    bad = await local.ask(STATS_USER, me, period="fortnight")
    assert bad.status == 400 and "today, week, month, year, all" in (bad.error or "")
    assert (await local.ask(STATS_INSTANCE, me, instance_id=a, period="year")).status == 400
    assert (await local.ask(STATS_SYSTEM, me)).status == 403
    assert (await local.ask(STATS_USER, me, userId=other)).status == 403
    assert (await local.ask("stats.nope", me)).status == 400


async def _user_stats(s: Running, user: str) -> dict:
    reply = await s.ask(STATS_USER, Caller(user_id=user), period="all")
    assert reply.ok, reply
    return dict(reply.data)


async def test_a_users_stats_never_show_another_users_instance(stats: Running) -> None:
    """Counters attributed to another user's instance before attribution was checked (written
    here as the old code wrote them) stay out of both users' per-instance views."""
    s = stats
    alice, bob = f"user-{new_id()}", f"user-{new_id()}"
    a = new_id()
    await s.bus.publish_event(created(alice, a, "Alice's"))

    async def known() -> bool:
        return (await _user_stats(s, alice))["total"]["instanceCount"] == 1

    await wait_for(known, timeout_s=20, message="alice's instance known to stats")
    today = datetime.now(UTC).date()
    usage = s.service.repo.usage
    async with s.service.repo.write() as conn:
        await usage.add_usage(conn, {(alice, a, today): {"api_calls": 2}, (bob, a, today): {"api_calls": 6}})
        await usage.add_user_daily(conn, {(bob, today): (0, 6)})

    theirs = await _user_stats(s, bob)
    assert theirs["instances"] == [] and theirs["total"]["apiCalls"] == 6
    mine = await _user_stats(s, alice)
    assert [(r["instanceId"], r["apiCalls"]) for r in mine["instances"]] == [(a, 2)]
    usage_a = (await s.ask(STATS_INSTANCE, Caller(user_id=alice), instance_id=a, period="all")).data["usage"]
    assert usage_a["apiCalls"] == 2
    assert (await s.ask(STATS_INSTANCE, Caller(user_id=bob), instance_id=a)).status == 404

    # An instance stats has never heard of: a user sees only the calls they made about it.
    unknown = new_id()
    async with s.service.repo.write() as conn:
        await usage.add_usage(
            conn, {(alice, unknown, today): {"api_calls": 1}, (bob, unknown, today): {"api_calls": 9}}
        )
    bob_view = await s.ask(STATS_INSTANCE, Caller(user_id=bob), instance_id=unknown, period="all")
    assert bob_view.data["usage"]["apiCalls"] == 9
    admin_view = await s.ask(STATS_INSTANCE, ADMIN, instance_id=unknown, period="all")
    assert admin_view.data["usage"]["apiCalls"] == 10
