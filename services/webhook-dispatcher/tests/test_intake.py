"""Batched ingest end to end (real bus, PostgreSQL, loopback receivers): one transaction per
window, a malformed event failing only itself, a failed window redelivered and delivered once,
new rows handed straight to delivery and never also taken by a claim loop, and the in-memory
settings replica following every endpoint change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from conftest import wait_for
from tests.support.dispatcher import Stack, make_settings, start_stack, stop_stack
from wa_common.bus import EXCHANGE_EVENTS, SERVICE_QUEUES, dead_letter_queue
from wa_common.db import create_engine
from wa_common.migrations import upgrade
from wa_common.schemas import Event
from wa_common.schemas.events import InstanceSnapshot, WebhookSettings
from wa_webhooks.consumers import EventConsumer, ReplicaFollower
from wa_webhooks.models import Delivery
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import Repository

pytestmark = pytest.mark.integration

EVENTS_QUEUE = SERVICE_QUEUES["webhooks"].name


@pytest.fixture(scope="module")
async def own(amqp_url: str, fresh_db: str) -> AsyncIterator[Stack]:
    """A dispatcher on this module's own database (its tests alter the outbox table)."""
    runtime, s = await start_stack(make_settings(amqp_url, fresh_db))
    yield s
    await stop_stack(runtime, s)


def connected(iid: str) -> Event:
    return Event(type="connected", instance_id=iid, user_id="user-1", data={"instanceId": iid})


def ids_received(server: Any) -> list[str]:
    return [q.headers["x-webhook-id"] for q in server.requests]


async def rows_of(stack: Stack, *iids: str) -> int:
    async with stack.dispatcher.repo.sessions() as s:
        q = select(func.count()).select_from(Delivery).where(Delivery.instance_id.in_(iids))
        return int((await s.execute(q)).scalar_one())


async def dead_letters(stack: Stack) -> int:
    channel = await stack.bus.connection.channel()
    try:
        dead = await channel.declare_queue(dead_letter_queue(EVENTS_QUEUE), passive=True)
        return int(dead.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def publish_raw(stack: Stack, body: bytes, event_type: str, routing_key: str) -> None:
    channel = await stack.bus.connection.channel()
    try:
        exchange = await channel.get_exchange(EXCHANGE_EVENTS, ensure=False)
        message = aio_pika.Message(body, headers={"x-event-type": event_type}, delivery_mode=2)
        await exchange.publish(message, routing_key=routing_key)
    finally:
        await channel.close()


async def test_a_malformed_event_fails_alone_in_its_window(own: Stack, http_servers) -> None:
    r = await http_servers()
    iid = await own.create_instance(r.url())
    dead_before = await dead_letters(own)
    good = [connected(iid) for _ in range(40)]
    too_long = Event(type="connected", instance_id="x" * 80, data={"instanceId": "x" * 80})
    await asyncio.gather(
        *(own.bus.publish_event(e) for e in good[:20]),
        publish_raw(own, b'{"type": "connected", "instanceId": ', "connected", f"connected.{iid}"),
        own.bus.publish_event(too_long),  # would fail the window's insert (varchar(64))
        *(own.bus.publish_event(e) for e in good[20:]),
    )
    expected = {e.id for e in good}
    await wait_for(lambda: set(ids_received(r)) >= expected, message="the good events delivered")
    await wait_for(lambda: _eq(dead_letters(own), dead_before + 2), message="both malformed dead-lettered")
    assert sorted(ids_received(r)) == sorted(expected), "each good event once, nothing else"
    assert await rows_of(own, iid) == 40


async def test_a_window_whose_write_fails_is_redelivered_and_delivered_once(own: Stack, http_servers) -> None:
    r = await http_servers()
    victim = await own.create_instance(r.url())
    healthy = await own.create_instance(r.url())
    nacked = ("wa_bus_messages_nacked_total", {"queue": EVENTS_QUEUE, "requeue": "true"})
    before = REGISTRY.get_sample_value(*nacked) or 0.0
    async with own.dispatcher.repo.engine.begin() as conn:
        await conn.execute(
            text(
                "ALTER TABLE webhook_deliveries ADD CONSTRAINT test_refuse_victim "
                f"CHECK (instance_id <> '{victim}') NOT VALID"
            )
        )
    with capture_logs() as logs:  # (rendering each failure's traceback takes seconds here)
        try:
            events = [connected(iid) for _ in range(3) for iid in (victim, healthy)]
            await asyncio.gather(*(own.bus.publish_event(e) for e in events))
            await wait_for(
                lambda: (REGISTRY.get_sample_value(*nacked) or 0.0) > before,
                timeout_s=30,
                message="a window failed",
            )
        finally:
            async with own.dispatcher.repo.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE webhook_deliveries DROP CONSTRAINT test_refuse_victim"))
        expected = {e.id for e in events}
        await wait_for(lambda: set(ids_received(r)) >= expected, timeout_s=30, message="all delivered")
    assert any(e["event"].startswith("message handler failed") for e in logs)
    assert sorted(ids_received(r)) == sorted(expected), "each event delivered exactly once"
    assert await rows_of(own, victim, healthy) == 6


async def test_a_row_handed_straight_to_delivery_is_not_claimed_as_well(
    own: Stack, http_servers, fresh_db: str
) -> None:
    gate = asyncio.Event()

    async def held(_r: Any, _n: int) -> int:
        await gate.wait()
        return 200

    r = await http_servers(held)
    iid = await own.create_instance(r.url())
    # A second replica on the same store, claiming as often as it can.
    other = Dispatcher(Repository(create_engine(fresh_db)), make_settings("amqp://unused/", fresh_db))
    task = asyncio.create_task(other.run())
    try:
        events = [connected(iid) for _ in range(20)]
        counts = await asyncio.gather(*(own.dispatcher.ingest(e) for e in events))
        assert counts == [1] * 20
        await wait_for(lambda: len(r.requests) >= 4, message="attempts under way")  # per_host_concurrency
        async with own.dispatcher.repo.sessions() as s:
            rows = (await s.execute(select(Delivery).where(Delivery.instance_id == iid))).scalars().all()
        assert len(rows) == 20 and all(d.lock_token and d.status == "pending" for d in rows), (
            "leased at insert"
        )
        assert await other.repo.deliveries.claim(100, timedelta(seconds=30)) == [], "nothing due to claim"
        for _ in range(5):
            other.wake()
            await asyncio.sleep(0)
        gate.set()
        expected = {e.id for e in events}
        await wait_for(lambda: set(ids_received(r)) >= expected, message="all delivered")

        async def all_delivered() -> bool:
            async with own.dispatcher.repo.sessions() as s:
                q = select(func.count()).where(Delivery.instance_id == iid, Delivery.status == "delivered")
                return int((await s.execute(q.select_from(Delivery))).scalar_one()) == 20

        await wait_for(all_delivered, message="all recorded as delivered")
        assert sorted(ids_received(r)) == sorted(expected), "none sent twice"
        assert other.in_flight == 0
    finally:
        gate.set()
        task.cancel()
        await other.close()
        await other.repo.engine.dispose()


async def test_the_replica_follows_endpoint_changes(own: Stack, http_servers, fresh_db: str) -> None:
    first, second = await http_servers(), await http_servers()
    # Another process's replica, kept by the fan-out subscription alone (as in main).
    other = Dispatcher(Repository(create_engine(fresh_db)), make_settings("amqp://unused/", fresh_db))
    follower = await own.bus.consume_transient(
        [(EXCHANGE_EVENTS, key) for key in ReplicaFollower.BINDING_KEYS],
        ReplicaFollower(other.replica),
        name_prefix="wa.test.replica",
    )
    try:
        replica = own.dispatcher.replica
        iid = await own.create_instance(first.url(), secret="one")
        view = replica.get(iid)
        assert view is not None and view.url == first.url()
        await own.publish("connected", iid, {"instanceId": iid})
        await wait_for(lambda: len(first.requests) == 1, message="delivered to the first URL")

        await own.update_instance(iid, second.url(), secret="two", notify_sent=False)
        view = replica.get(iid)
        assert view is not None and (view.url, view.secret, view.notify_sent) == (second.url(), "two", False)
        await own.publish("connected", iid, {"instanceId": iid})
        await wait_for(lambda: len(second.requests) == 1, message="delivered to the new URL")
        sent = {"instanceId": iid, "messageId": "m", "to": "x", "body": "b", "type": "text"}
        assert await own.dispatcher.ingest(Event(type="message_sent", instance_id=iid, data=sent)) == 0
        await wait_for(
            lambda: (v := other.replica.get(iid)) is not None and v.url == second.url(),
            message="the other replica follows",
        )

        await own.update_instance(iid, second.url(), enabled=False)
        assert await own.dispatcher.ingest(connected(iid)) == 0
        await own.publish("instance.deleted", iid, {"instanceId": iid, "userId": own.user_id})
        await wait_for(lambda: (v := replica.get(iid)) is not None and v.deleted, message="tombstone")
        late = InstanceSnapshot(
            instance_id=iid,
            user_id=own.user_id,
            name="late",
            webhook_url=second.url(),
            webhook_enabled=True,
            webhook_settings=WebhookSettings(secret="late"),
            updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        await EventConsumer(own.dispatcher).handle(
            Event(type="instance.updated", instance_id=iid, data=late.dump())
        )
        view = replica.get(iid)
        assert view is not None and view.deleted and view.secret is None, "not revived"
        await wait_for(
            lambda: (v := other.replica.get(iid)) is not None and v.deleted, message="the other one too"
        )
        assert len(first.requests) == 1 and len(second.requests) == 1
    finally:
        await follower.cancel()
        await other.close()
        await other.repo.engine.dispose()


async def _eq(value: Any, expected: int) -> bool:
    return (await value) == expected


async def test_the_embedded_sqlite_store_takes_the_same_paths(http_servers, tmp_path) -> None:
    """Batched insert, hand-over and batched attempt records on SQLite (``make run``)."""
    url = f"sqlite:///{tmp_path}/webhooks.db"
    await asyncio.to_thread(upgrade, "wa_webhooks", url)
    engine = create_engine(url)
    dispatcher = Dispatcher(Repository(engine), make_settings("amqp://unused/", url))
    task = asyncio.create_task(dispatcher.run())
    r = await http_servers(lambda _r, n: 500 if n == 1 else 200)
    try:
        consumer = EventConsumer(dispatcher)
        snap = InstanceSnapshot(
            instance_id="sqlite-instance",
            user_id="u1",
            name="t",
            webhook_url=r.url(),
            webhook_enabled=True,
            webhook_settings=WebhookSettings(max_retries=1, retry_interval=1000),
            updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        await consumer.handle(Event(type="instance.created", instance_id=snap.instance_id, data=snap.dump()))
        events = [connected(snap.instance_id) for _ in range(5)]
        assert await asyncio.gather(*(dispatcher.ingest(e) for e in events)) == [1] * 5
        assert await dispatcher.ingest(events[0]) == 0, "idempotent"

        async def delivered() -> bool:
            rows, _, _ = await dispatcher.repo.deliveries.page(
                snap.instance_id, status=None, limit=10, skip=0
            )
            return [d.status for d in rows] == ["delivered"] * 5

        await wait_for(delivered, timeout_s=15, message="all delivered on SQLite")
        assert sorted(set(ids_received(r))) == sorted(e.id for e in events) and len(r.requests) == 6
    finally:
        task.cancel()
        await dispatcher.close()
        await engine.dispose()
