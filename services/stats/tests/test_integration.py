"""Issue 7 acceptance: the stats service on the real RabbitMQ and PostgreSQL.

1. ``python -m wa_stats`` as a process on PostgreSQL: message and usage events fed through the
   bus are reported exactly by the three queries; replaying the same events changes nothing.
2. The service in this process with an injected clock (on a SQLite file): the 5th
   ``message_sent`` of a user with ``maxMessagesSent=5`` publishes exactly one
   ``limit_exceeded`` (seen on a test queue bound to ``limit_exceeded.#``), and after the clock
   rolls over to the next UTC day ``stats.limits_state`` reports nothing blocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from services.stats.tests.support import ADMIN, api_calls, ask_bus, counters, created, message
from tests.harness import free_port
from wa_common.bus import EXCHANGE_EVENTS, Bus, RpcClient
from wa_common.clock import ManualClock
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Event, EventType
from wa_common.schemas.stats import (
    STATS_INSTANCE,
    STATS_LIMITS_SET,
    STATS_LIMITS_STATE,
    STATS_SYSTEM,
    STATS_USER,
)
from wa_stats.main import build_app
from wa_stats.settings import StatsSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def client_bus(amqp_url: str) -> AsyncIterator[tuple[Bus, RpcClient]]:
    bus = Bus(amqp_url, service="stats-test-client", shard_count=64, publish_timeout_s=5)
    await bus.connect()
    rpc = RpcClient(bus)
    await rpc.start()
    yield bus, rpc
    await bus.close(timeout_s=2)


# --- 1. the real process on PostgreSQL ---------------------------------------------------------


proc_box: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def stats_process(amqp_url: str, postgres_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "WA_PROFILE": "embedded",
        "AMQP_URL": amqp_url,
        "STATS_DATABASE_URL": postgres_url,
        "STATS_PORT": str(port),
        "LOG_FORMAT": "json",
        "STATS_SHUTDOWN_TIMEOUT_S": "5",
        "PYTHONUNBUFFERED": "1",
    }
    # What `python -m wa_stats migrate` runs, in a thread (Alembic runs its own event loop).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, "wa_stats", postgres_url).result(timeout=120)
    log = (tmp_path / "stats.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "wa_stats"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    proc_box.append(proc)
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        text = (tmp_path / "stats.log").read_text()
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the status is -SIGTERM (or 0);
        # the log shows the shutdown ran to its end.
        assert proc.returncode in (0, -signal.SIGTERM), f"wa_stats ended with {proc.returncode}"
        assert '"service stopped"' in text, f"wa_stats did not stop gracefully:\n{text[-3000:]}"


async def ready(base: str) -> bool:
    proc = proc_box[-1]
    if proc.poll() is not None:
        raise AssertionError(f"wa_stats exited with {proc.returncode} before it was ready (log above)")
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{base}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def scrape(base: str, name: str) -> float:
    """Sum of the samples named ``name`` on the process's /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{base}/metrics")).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


async def test_counts_over_the_bus_and_replay_changes_nothing(stats_process: str, client_bus) -> None:
    bus, rpc = client_bus
    await wait_for(lambda: ready(stats_process), timeout_s=60, message="stats /readyz")
    user, other = f"user-{new_id()}", f"user-{new_id()}"
    inst_a, inst_b = new_id(), new_id()
    system_before = (await ask_bus(rpc, STATS_SYSTEM, ADMIN)).data

    n_sent, m_received = 7, 5
    sent_media = [1000, 2500]  # bytes, on two of the sent messages
    received_media = [300_000]
    events: list[Event] = [
        created(user, inst_a, "Primary"),
        created(user, inst_b, "Second"),
        Event(type=EventType.CONNECTED, instance_id=inst_a, user_id=user, data={"instanceId": inst_a}),
        Event(type=EventType.USER_CREATED, user_id=user, data={"userId": user, "active": True}),
    ]
    for i in range(n_sent):
        media = sent_media[i] if i < len(sent_media) else None
        events.append(message(EventType.MESSAGE_SENT, user, inst_a if i % 2 == 0 else inst_b, media=media))
    for i in range(m_received):
        media = received_media[i] if i < len(received_media) else None
        events.append(message(EventType.MESSAGE_RECEIVED, user, inst_a, media=media))
    events.append(api_calls([(user, inst_a, 40), (user, None, 2), (other, None, 9)]))
    events.append(api_calls([(user, inst_a, 5), (user, inst_b, 3)]))
    for event in events:
        await bus.publish_event(event)

    me = Caller(user_id=user)
    media_total = sum(sent_media) + sum(received_media)

    async def user_total() -> dict[str, Any] | None:
        reply = await ask_bus(rpc, STATS_USER, me, period="all")
        assert reply.ok, reply
        total = reply.data["total"]
        done = total["messagesSent"] == n_sent and total["messagesReceived"] == m_received
        return reply.data if done and total["apiCalls"] == 50 else None

    data = await wait_for(user_total, timeout_s=30, message="all events counted")
    media_counts = (len(sent_media), len(received_media), media_total)
    assert data["total"] == {**counters(n_sent, m_received, *media_counts, api=50), "instanceCount": 2}
    rows = {r["instanceId"]: r for r in data["instances"]}
    assert rows[inst_a]["name"] == "Primary" and rows[inst_b]["name"] == "Second"
    assert rows[inst_a]["messagesSent"] + rows[inst_b]["messagesSent"] == n_sent
    assert rows[inst_a]["apiCalls"] == 45 and rows[inst_b]["apiCalls"] == 3

    instance = await ask_bus(rpc, STATS_INSTANCE, me, instance_id=inst_a, period="all")
    usage = instance.data["usage"]
    assert usage["messagesSent"] == 4 and usage["messagesReceived"] == m_received
    assert usage["totalMediaSize"] == sent_media[0] + sum(received_media) and usage["apiCalls"] == 45
    assert sum(d["messagesSent"] for d in usage["dailyStats"]) == 4
    assert (await ask_bus(rpc, STATS_INSTANCE, Caller(user_id=other), instance_id=inst_a)).status == 404
    bad = await ask_bus(rpc, STATS_USER, me, period="fortnight")
    assert bad.status == 400 and "week, month, year, all" in (bad.error or "")
    assert (await ask_bus(rpc, STATS_SYSTEM, me)).status == 403

    system = (await ask_bus(rpc, STATS_SYSTEM, ADMIN)).data
    delta = {k: system["usage"][k] - system_before["usage"][k] for k in system["usage"]}
    assert delta["messagesSent"] == n_sent and delta["messagesReceived"] == m_received
    assert delta["totalMediaSize"] == media_total and delta["apiCalls"] == 59
    assert system["instances"]["total"] - system_before["instances"]["total"] == 2
    assert system["instances"]["active"] - system_before["instances"]["active"] == 1
    assert system["users"]["total"] - system_before["users"]["total"] == 1

    # Replay every event (same ids): the process skips them all and the numbers do not move.
    duplicates_before = await scrape(stats_process, "wa_stats_duplicate_events_skipped_total")
    for event in events:
        await bus.publish_event(event)

    async def replay_seen() -> bool:
        now = await scrape(stats_process, "wa_stats_duplicate_events_skipped_total")
        return now - duplicates_before >= len(events)

    await wait_for(replay_seen, timeout_s=30, message="replayed events skipped")
    again = await ask_bus(rpc, STATS_USER, me, period="all")
    assert again.data == data
    assert (await ask_bus(rpc, STATS_INSTANCE, me, instance_id=inst_a, period="all")).data == instance.data
    assert (await ask_bus(rpc, STATS_SYSTEM, ADMIN)).data["usage"] == system["usage"]
    assert await scrape(stats_process, "wa_stats_events_processed_total") >= 2 * len(events)


# --- 2. limits with an injected clock ----------------------------------------------------------


def processed(kind: str) -> float:
    return REGISTRY.get_sample_value("wa_stats_events_processed_total", {"type": kind}) or 0.0


async def test_limit_exceeded_once_then_clears_next_day(amqp_url: str, client_bus, tmp_path: Path) -> None:
    bus, rpc = client_bus
    url = f"sqlite:///{tmp_path}/stats.db"
    await asyncio.to_thread(upgrade, "wa_stats", url)
    clock = ManualClock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    settings = StatsSettings(profile="embedded", amqp_url=amqp_url, database_url=url, port=0)
    app = build_app(settings, now=clock)
    runtime = app.state.runtime

    # A test queue bound to limit_exceeded.#, read without a consumer so its depth is exact.
    channel = await bus.connection.channel()
    probe = await channel.declare_queue(f"wa.test.limits.{new_id()}", exclusive=True, auto_delete=True)
    await probe.bind(await channel.get_exchange(EXCHANGE_EVENTS, ensure=False), "limit_exceeded.#")

    async def take() -> list[Event]:
        """Every message in the probe queue now (the broker confirmed them before the handler
        that published them finished, so they are all there)."""
        taken = []
        while (got := await probe.get(no_ack=True, fail=False)) is not None:
            taken.append(Event.from_bytes(got.body))
        return taken

    await runtime.start()
    try:
        user, inst = f"user-{new_id()}", new_id()
        me = Caller(user_id=user)
        reply = await ask_bus(rpc, STATS_LIMITS_SET, ADMIN, userId=user, limits={"maxMessagesSent": 5})
        assert reply.ok and reply.data["state"] == [], reply
        base = processed("message_sent")
        sends = [message(EventType.MESSAGE_SENT, user, inst, at=clock()) for _ in range(8)]
        for event in sends[:4]:
            await bus.publish_event(event)
        await wait_for(lambda: processed("message_sent") - base >= 4, timeout_s=20, message="4 sends counted")
        assert await take() == []
        assert (await ask_bus(rpc, STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}

        await bus.publish_event(sends[4])  # the 5th uses the quota up: the 6th must be refused
        limit_events = await wait_for(take, timeout_s=20, message="limit_exceeded published")
        # More sends, and the crossing event once more: still exactly one limit_exceeded.
        for event in [sends[5], sends[6], sends[7], sends[4]]:
            await bus.publish_event(event)
        await wait_for(lambda: processed("message_sent") - base >= 9, timeout_s=20, message="all handled")
        limit_events += await take()
        assert len(limit_events) == 1, limit_events
        event = limit_events[0]
        assert event.type == "limit_exceeded" and event.user_id == user and event.instance_id == inst
        assert event.data == {
            "instanceId": inst,
            "exceededLimits": ["maxMessagesSent"],
            "usage": {"messagesSent": 5, "apiCalls": 0},
        }
        next_day = datetime.combine(clock().date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        assert event.meta["limit"] == "maxMessagesSent"
        assert event.meta["resetsAt"] == next_day.strftime("%Y-%m-%dT%H:%M:%S.000Z")

        state = (await ask_bus(rpc, STATS_LIMITS_STATE, me, userId=user)).data["blocked"]
        assert [(b["limit"], b["usage"], b["resetsAt"]) for b in state] == [
            ("maxMessagesSent", 8, event.meta["resetsAt"])
        ]
        everyone = (await ask_bus(rpc, STATS_LIMITS_STATE, None)).data["blocked"]
        assert [b["userId"] for b in everyone if b["userId"] == user] == [user]

        clock.advance((next_day - clock()).total_seconds() + 1)  # the UTC day rolls over
        assert (await ask_bus(rpc, STATS_LIMITS_STATE, me, userId=user)).data == {"blocked": []}
        today = (await ask_bus(rpc, STATS_INSTANCE, me, instance_id=inst)).data["usage"]
        assert today["messagesSent"] == 0 and today["dailyStats"] == []
        week_or_month = await ask_bus(rpc, STATS_USER, me, period="all")
        assert week_or_month.data["total"]["messagesSent"] == 8
    finally:
        await runtime.stop()
        await channel.close()
