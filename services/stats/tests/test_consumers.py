"""The stats queue's consumer (``wa_stats.consumers``, the shared request router) on the real
RabbitMQ: a request that is malformed or invalid is answered 400 within its deadline and
acknowledged, never dead-lettered."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from conftest import raw_bus_request
from services.stats.tests.support import ADMIN, Running
from wa_common.bus import STATS_QUERY_QUEUE, dead_letter_queue
from wa_common.schemas import Caller
from wa_common.schemas.stats import STATS_INSTANCE, STATS_LIMITS_SET, STATS_USER


def nacked(requeue: str) -> float:
    labels = {"queue": STATS_QUERY_QUEUE, "requeue": requeue}
    return REGISTRY.get_sample_value("wa_bus_messages_nacked_total", labels) or 0.0


def requests(name: str, outcome: str) -> float:
    labels = {"name": name, "outcome": outcome}
    return REGISTRY.get_sample_value("wa_bus_requests_total", labels) or 0.0


async def test_a_malformed_query_is_answered_400_within_its_deadline(stats: Running) -> None:
    deadline_s = 5.0
    before = requests("unknown", "error")
    started = time.monotonic()
    reply = await raw_bus_request(
        stats.bus.connection,
        STATS_QUERY_QUEUE,
        b'{"name": ["stats.user"], "payload": 7}',
        timeout_s=deadline_s,
    )
    assert time.monotonic() - started < deadline_s
    assert (reply.ok, reply.status, reply.error) == (False, 400, "malformed request")
    assert requests("unknown", "error") == before + 1
    assert await stats.depth(dead_letter_queue(STATS_QUERY_QUEUE)) == 0


async def test_a_bad_request_is_answered_400_and_never_dead_lettered(stats: Running) -> None:
    s = stats
    before = {r: nacked(r) for r in ("true", "false")}
    for body in (b"not json", b'{"name": 5}', b"\xff\xfe", b'{"name": "stats.user", "kind": "command"}'):
        reply = await raw_bus_request(s.bus.connection, STATS_QUERY_QUEUE, body)
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
    assert {r: nacked(r) for r in ("true", "false")} == before
    assert await s.depth(dead_letter_queue(STATS_QUERY_QUEUE)) == 0
