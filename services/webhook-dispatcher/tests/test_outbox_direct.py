"""The outbox, retries, isolation, cancellation and the API on real PostgreSQL, without the broker.

The same paths the bus consumers take (``EventConsumer.handle``, the request router's ``dispatch``), called
directly: these run even when RabbitMQ is unavailable; ``test_delivery.py`` covers the bus.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import wait_for
from tests.support.dispatcher import make_settings
from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, Query
from wa_common.schemas.events import InstanceSnapshot, WebhookSettings
from wa_webhooks.api import WebhooksApi
from wa_webhooks.consumers import EventConsumer
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import Repository

pytestmark = pytest.mark.integration


class Direct:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.repo = dispatcher.repo
        self.consumer = EventConsumer(dispatcher)
        self.api = WebhooksApi(self.repo, dispatcher).router
        self.published: list[Event] = []

    async def instance(self, url: str, *, enabled: bool = True, user_id: str = "u1", **ws: Any) -> str:
        iid = new_id()
        snap = InstanceSnapshot(
            instance_id=iid,
            user_id=user_id,
            name="t",
            webhook_url=url,
            webhook_enabled=enabled,
            webhook_settings=WebhookSettings(**ws),
            updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        await self.consumer.handle(Event(type="instance.created", instance_id=iid, data=snap.dump()))
        return iid

    async def event(self, type_: str, iid: str, **data: Any) -> Event:
        ev = Event(type=type_, instance_id=iid, data={"instanceId": iid, **data})
        await self.consumer.handle(ev)
        return ev

    async def status(self, iid: str) -> list[str]:
        rows, _, _ = await self.repo.deliveries.page(iid, status=None, limit=100, skip=0)
        return [r.status for r in rows]


@pytest.fixture(scope="module")
async def direct(repo: Repository, fresh_db: str) -> AsyncIterator[Direct]:
    holder: list[Direct] = []

    async def publish(event: Event) -> None:
        holder[0].published.append(event)

    dispatcher = Dispatcher(repo, make_settings("amqp://unused/", fresh_db), publish=publish)
    d = Direct(dispatcher)
    holder.append(d)
    task = asyncio.create_task(dispatcher.run())
    yield d
    task.cancel()
    await dispatcher.close()


async def test_retries_then_success_and_exhaustion(direct: Direct, http_servers):
    flaky = await http_servers(lambda _r, n: 500 if n <= 2 else 204)
    dead = await http_servers(lambda _r, n: 404)
    f = await direct.instance(flaky.url(), max_retries=3, retry_interval=1000)
    d = await direct.instance(dead.url(), max_retries=2, retry_interval=1000)
    await direct.event("connected", f)
    await direct.event("connected", d)

    async def done() -> bool:
        return await direct.status(f) == ["delivered"] and await direct.status(d) == ["failed"]

    await wait_for(done, timeout_s=15, message="finished")
    assert len(flaky.requests) == 3 and len(dead.requests) == 3
    for rec in (flaky, dead):
        gaps = [b.at - a.at for a, b in zip(rec.requests, rec.requests[1:], strict=False)]
        assert all(0.9 <= g <= 2.0 for g in gaps), gaps
    types = sorted((e.type, e.data["attempts"]) for e in direct.published if e.instance_id in (f, d))
    assert types == [("webhook.delivered", 3), ("webhook.failed", 3)]


async def test_hanging_endpoint_does_not_delay_a_healthy_one(direct: Direct, http_servers):
    hang = await http_servers(lambda _r, n: None)
    healthy = await http_servers()
    h = await direct.instance(hang.url(), max_retries=0)
    ok = await direct.instance(healthy.url())
    for _ in range(60):
        await direct.event("connected", h)
    await wait_for(lambda: len(hang.requests) >= 4, message="hanging endpoint busy")
    sent = {}
    for _ in range(20):
        ev = await direct.event("connected", ok)
        sent[ev.id] = time.monotonic()
    await wait_for(lambda: len(healthy.requests) >= 20, timeout_s=5, message="healthy deliveries")
    lat = sorted(q.at - sent[q.headers["x-webhook-id"]] for q in healthy.requests)
    print(
        f"healthy latency with a hanging endpoint: p50 {lat[10] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
    )
    assert lat[-1] < 1.0, lat
    # Bounded: at most per_host_concurrency (4) attempts hang at once.
    assert len(hang.requests) < 60


async def test_instance_deleted_cancels_pending_and_api(direct: Direct, http_servers):
    rec = await http_servers(lambda _r, n: 500 if n == 1 else 200)
    iid = await direct.instance(rec.url(), max_retries=0, secret="k")
    first = await direct.event(
        "message_status", iid, messageId="m", status="delivered", **{"from": "x"}, fromMe=True
    )
    assert await direct.status(iid) == []  # notifyDelivery is off by default
    first = await direct.event("qr_received", iid, qrCode="Привет")
    await wait_for(lambda: direct.status(iid), message="delivery")

    async def failed() -> bool:
        return await direct.status(iid) == ["failed"]

    await wait_for(failed, message="failed")
    caller = Caller(user_id="u1")
    listed = await direct.api.dispatch(Query(name="webhooks.deliveries.list", instance_id=iid, caller=caller))
    assert listed is not None  # None only for a request past its deadline; these have none
    page = listed.data
    delivery = page["deliveries"][0]
    assert delivery["eventId"] == first.id and delivery["attempts"][0]["outcome"] == "5xx"
    other = Caller(user_id="u2")
    foreign = await direct.api.dispatch(Query(name="webhooks.deliveries.list", instance_id=iid, caller=other))
    assert foreign is not None and foreign.status == 404
    reply = await direct.api.dispatch(
        Query(
            name="webhooks.deliveries.redeliver",
            instance_id=iid,
            caller=caller,
            payload={"deliveryId": delivery["id"]},
        )
    )
    assert reply is not None and reply.status == 202
    await wait_for(lambda: len(rec.requests) == 2, message="redelivered")
    assert rec.requests[1].headers["x-webhook-id"] == first.id
    assert json.loads(rec.requests[1].body)["data"]["qrCode"] == "Привет"

    slow = await http_servers(lambda _r, n: 500)
    iid2 = await direct.instance(slow.url(), max_retries=5, retry_interval=60000)
    await direct.event("connected", iid2)
    await wait_for(lambda: len(slow.requests) == 1, message="first attempt")
    await direct.consumer.handle(
        Event(type="instance.deleted", instance_id=iid2, data={"instanceId": iid2, "userId": "u1"})
    )
    assert await direct.status(iid2) == ["cancelled"]
    assert (
        await direct.dispatcher.ingest(Event(type="connected", instance_id=iid2, data={"instanceId": iid2}))
        == 0
    )


async def test_two_dispatchers_on_one_store_never_double_send(direct: Direct, http_servers, fresh_db: str):
    rec = await http_servers()
    second = Dispatcher(Repository(create_engine(fresh_db)), make_settings("amqp://unused/", fresh_db))
    task = asyncio.create_task(second.run())
    try:
        iid = await direct.instance(rec.url())
        events = [Event(type="connected", instance_id=iid, data={"instanceId": iid}) for _ in range(300)]
        await asyncio.gather(*(direct.dispatcher.ingest(e) for e in events))
        second.wake()
        await wait_for(
            lambda: len({q.headers["x-webhook-id"] for q in rec.requests}) == 300,
            timeout_s=60,
            message="all delivered",
        )
        ids = [q.headers["x-webhook-id"] for q in rec.requests]
        assert len(ids) == len(set(ids)) == 300
    finally:
        task.cancel()
        await second.close()
        await second.repo.engine.dispose()
