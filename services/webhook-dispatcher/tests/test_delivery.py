"""End to end through the real bus and PostgreSQL: bodies, signatures, filter, retries, isolation,
cancellation, API. Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from wa_common.bus import EXCHANGE_EVENTS
from wa_common.schemas import Event
from wa_webhooks.service import canonical_json

pytestmark = pytest.mark.integration

SECRET = "s3cr\u00e9t-\U0001f511"
NODE = shutil.which("node") or "/usr/bin/node"
VERIFY_JS = r"""
const crypto = require('crypto');
// The reference's snippet, verbatim.
function verifyWebhookSignature(body, signature, secret) {
  const computedSignature = crypto
    .createHmac('sha256', secret)
    .update(typeof body === 'string' ? body : JSON.stringify(body))
    .digest('hex');

  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(computedSignature)
  );
}
let input = '';
process.stdin.on('data', c => input += c).on('end', () => {
  const out = JSON.parse(input).map(({body, signature, secret}) => {
    const parsed = JSON.parse(Buffer.from(body, 'base64').toString('utf8'));  // what express.json() does
    return verifyWebhookSignature(parsed, signature, secret);
  });
  process.stdout.write(JSON.stringify(out));
});
"""
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def node_verify(items: list[tuple[bytes, str, str]]) -> list[bool]:
    payload = [{"body": base64.b64encode(b).decode(), "signature": s, "secret": k} for b, s, k in items]
    out = subprocess.run(
        [NODE, "-e", VERIFY_JS],
        input=json.dumps(payload).encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return list(json.loads(out.stdout))


def js_restringify(body: bytes) -> bytes:
    """JSON.stringify(JSON.parse(body)) for bodies without integer-like keys or floats."""
    return json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":")).encode()


def sample_events(iid: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_received",
            {
                "instanceId": iid,
                "messageId": "M1",
                "from": "79001234567@s.whatsapp.net",
                "body": 'Привет! Как дела? 😀👍🏽 "quoted" \\ / \n',
                "type": "conversation",
                "timestamp": 1672531200,
                "hasMedia": False,
                "pushName": "Иван 🚀",
            },
        ),
        (
            "message_sent",
            {
                "instanceId": iid,
                "messageId": "M2",
                "to": "79001234567@s.whatsapp.net",
                "body": "Отлично 👌 日本語",
                "type": "text",
                "timestamp": 1672531260,
                "hasMedia": False,
            },
        ),
        (
            "message_status",
            {
                "instanceId": iid,
                "messageId": "M2",
                "status": "delivered",
                "from": "79001234567@s.whatsapp.net",
                "fromMe": True,
            },
        ),
        (
            "message_status",
            {
                "instanceId": iid,
                "messageId": "M2",
                "status": "read",
                "from": "79001234567@s.whatsapp.net",
                "fromMe": True,
            },
        ),
        ("connected", {"instanceId": iid}),
        ("disconnected", {"instanceId": iid, "reason": "logout", "willReconnect": False}),
        (
            "qr_received",
            {
                "instanceId": iid,
                "qrCode": "1@HbT1Ye1Hhb9eB9KRWwRQbz4IP3wK8ocJ35zzr2z25PinMxWkgZ46Vp8l07Wz9Wl5HmdULhQ==,x",
            },
        ),
        (
            "limit_exceeded",
            {
                "instanceId": iid,
                "exceededLimits": ["maxMessagesSent", "maxApiCalls"],
                "usage": {"messagesSent": 1500, "apiCalls": 5000},
            },
        ),
        ("webhook_updated", {"instanceId": iid, "timestamp": "2023-01-01T15:00:00.000Z"}),
    ]


async def test_every_event_type_arrives_with_the_documented_body_and_a_verifiable_signature(
    stack, http_servers
):
    r = await http_servers()
    iid = await stack.create_instance(
        r.url(),
        secret=SECRET,
        notify_delivery=True,
        notify_read=True,
        headers={
            "X-Custom": "yes",
            "x-webhook-id": "forged",
            "CONTENT-TYPE": "text/plain",
            "User-Agent": "evil",
        },
    )
    published = []
    for type_, data in sample_events(iid):
        published.append(await stack.publish(type_, iid, data))
    await wait_for(lambda: len(r.requests) >= len(published), message="all events received")

    by_id = {e.id: e for e in published}
    checks = []
    for req in r.requests:
        h = req.headers
        event = by_id[h["x-webhook-id"]]
        body = json.loads(req.body)
        assert list(body) == ["event", "data", "timestamp"]
        assert body["event"] == event.type == h["x-webhook-event"]
        assert body["data"] == event.data
        assert list(body["data"]) == list(event.data)  # the reference's field order
        assert TS.match(body["timestamp"]) and body["timestamp"] == h["x-webhook-timestamp"]
        assert body["timestamp"] == event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{event.occurred_at.microsecond // 1000:03d}Z"
        )
        assert h["content-type"] == "application/json"
        assert h["user-agent"].startswith("wa-webhooks/")
        assert h["x-custom"] == "yes"
        # Signature: lowercase hex HMAC over the exact body, and over JSON.stringify(JSON.parse(body)).
        sig = h["x-webhook-signature"]
        assert re.fullmatch(r"[0-9a-f]{64}", sig)
        assert hmac.compare_digest(sig, hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest())
        assert js_restringify(req.body) == req.body == canonical_json(json.loads(req.body))
        checks.append((req.body, sig, SECRET))
    assert "Привет" in r.requests[0].body.decode("utf-8") or any("😀".encode() in q.body for q in r.requests)
    assert sorted(by_id) == sorted(q.headers["x-webhook-id"] for q in r.requests)
    if Path(NODE).exists():
        assert node_verify(checks) == [True] * len(checks)


async def test_filter_follows_the_notify_settings(stack, http_servers):
    r = await http_servers()
    d = stack.dispatcher
    iid = await stack.create_instance(
        r.url(), notify_received=False, notify_sent=True, notify_delivery=False, notify_read=True
    )
    evs = {
        name: Event(type=name.split(":")[0], instance_id=iid, data=data)
        for name, data in [
            (
                "message_received",
                {
                    "instanceId": iid,
                    "messageId": "a",
                    "from": "x",
                    "body": "b",
                    "type": "conversation",
                    "timestamp": 1,
                    "hasMedia": False,
                },
            ),
            (
                "message_sent",
                {
                    "instanceId": iid,
                    "messageId": "a",
                    "to": "x",
                    "body": "b",
                    "type": "text",
                    "timestamp": 1,
                    "hasMedia": False,
                },
            ),
            (
                "message_status:delivered",
                {"instanceId": iid, "messageId": "a", "status": "delivered", "from": "x", "fromMe": True},
            ),
            (
                "message_status:read",
                {"instanceId": iid, "messageId": "a", "status": "read", "from": "x", "fromMe": True},
            ),
            (
                "message_status:played",
                {"instanceId": iid, "messageId": "a", "status": "played", "from": "x", "fromMe": True},
            ),
            ("connected", {"instanceId": iid}),
            ("instance.created", {}),
            ("webhook.delivered", {}),
        ]
    }
    counts = {name: await d.ingest(ev) for name, ev in evs.items()}
    assert counts == {
        "message_received": 0,
        "message_sent": 1,
        "message_status:delivered": 0,
        "message_status:read": 1,
        "message_status:played": 1,
        "connected": 1,
        "instance.created": 0,
        "webhook.delivered": 0,
    }
    # Idempotent on the event id: ingesting again adds nothing.
    assert [await d.ingest(ev) for ev in evs.values()] == [0] * len(evs)
    await wait_for(lambda: len(r.requests) == 4, message="4 deliveries")
    # Disabled webhooks: nothing, even for always-sent events.
    await stack.update_instance(iid, r.url(), enabled=False)
    assert await d.ingest(Event(type="connected", instance_id=iid, data={"instanceId": iid})) == 0


async def test_redelivered_bus_message_creates_no_second_delivery(stack, http_servers):
    r = await http_servers()
    iid = await stack.create_instance(r.url())
    event = Event(type="connected", instance_id=iid, data={"instanceId": iid})
    await stack.bus.publish_event(event)
    await stack.bus.publish_event(event)  # the broker redelivering / a publisher retry
    marker = await stack.publish(
        "disconnected", iid, {"instanceId": iid, "reason": "x", "willReconnect": True}
    )
    await wait_for(lambda: any(q.headers["x-webhook-id"] == marker.id for q in r.requests), message="marker")
    _, _, total = await stack.dispatcher.repo.deliveries.page(iid, status=None, limit=10, skip=0)
    assert total == 2
    assert [q.headers["x-webhook-id"] for q in r.requests].count(event.id) == 1


async def test_limit_exceeded_without_instance_goes_to_every_enabled_instance_of_the_user(
    stack, http_servers
):
    r = await http_servers()
    user = "user-limits"
    a = await stack.create_instance(r.url(), user_id=user)
    b = await stack.create_instance(r.url(), user_id=user)
    await stack.create_instance(r.url(), user_id=user, enabled=False)
    await stack.create_instance(r.url(), user_id="someone-else")
    await stack.publish(
        "limit_exceeded",
        None,
        {"instanceId": None, "exceededLimits": ["maxApiCalls"], "usage": {"apiCalls": 5000}},
        user_id=user,
    )
    await wait_for(lambda: len(r.requests) >= 2, message="two deliveries")
    got = sorted(json.loads(q.body)["data"]["instanceId"] for q in r.requests)
    assert got == sorted([a, b])
    assert len({q.headers["x-webhook-id"] for q in r.requests}) == 1


async def test_retries_follow_max_retries_and_interval(stack, http_servers):
    outcomes = []

    async def collect(delivery):
        outcomes.append(Event.from_bytes(delivery.body))

    watcher = await stack.bus.consume_transient(
        [(EXCHANGE_EVENTS, "webhook.#")], collect, name_prefix="wa.test"
    )
    flaky = await http_servers(lambda _r, n: 500 if n <= 2 else 200)
    dead = await http_servers(lambda _r, n: 503)
    redirect = await http_servers(lambda _r, n: (302, {"Location": "http://127.0.0.1:1/"}))
    f_iid = await stack.create_instance(flaky.url(), max_retries=3, retry_interval=1000)
    d_iid = await stack.create_instance(dead.url(), max_retries=2, retry_interval=1000)
    r_iid = await stack.create_instance(redirect.url(), max_retries=0, retry_interval=1000)
    for iid in (f_iid, d_iid, r_iid):
        await stack.publish("connected", iid, {"instanceId": iid})

    async def finished() -> bool:
        statuses = []
        for iid in (f_iid, d_iid, r_iid):
            rows, _, _ = await stack.dispatcher.repo.deliveries.page(iid, status=None, limit=5, skip=0)
            statuses.append(rows[0].status if rows else None)
        return statuses == ["delivered", "failed", "failed"]

    await wait_for(finished, timeout_s=15, message="deliveries finished")
    assert len(flaky.requests) == 3
    assert len(dead.requests) == 1 + 2
    assert len(redirect.requests) == 1  # a 3xx is a failed attempt; the redirect is not followed
    for rec in (flaky, dead):
        gaps = [b.at - a.at for a, b in zip(rec.requests, rec.requests[1:], strict=False)]
        assert all(0.9 <= g <= 2.0 for g in gaps), gaps
        assert len({q.headers["x-webhook-id"] for q in rec.requests}) == 1
    rows, attempts, _ = await stack.dispatcher.repo.deliveries.page(d_iid, status=None, limit=5, skip=0)
    logged = attempts[rows[0].id]
    assert [a.number for a in logged] == [1, 2, 3]
    assert all(a.status_code == 503 and a.outcome == "5xx" and a.error == "HTTP 503" for a in logged)
    await wait_for(lambda: len(outcomes) >= 3, message="outcome events")
    kinds = {(e.type, e.instance_id, e.data["attempts"]) for e in outcomes}
    assert {
        ("webhook.delivered", f_iid, 3),
        ("webhook.failed", d_iid, 3),
        ("webhook.failed", r_iid, 1),
    } <= kinds
    await watcher.cancel()


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(stack, http_servers):
    hang = await http_servers(lambda _r, n: None)
    healthy = await http_servers()
    h_iid = await stack.create_instance(hang.url(), max_retries=0)
    ok_iid = await stack.create_instance(healthy.url())
    for _ in range(30):
        await stack.publish("connected", h_iid, {"instanceId": h_iid})
    await wait_for(lambda: len(hang.requests) >= 4, message="hanging receiver busy")
    sent = {}
    for _ in range(20):
        ev = await stack.publish("connected", ok_iid, {"instanceId": ok_iid})
        sent[ev.id] = time.monotonic()
    await wait_for(lambda: len(healthy.requests) >= 20, timeout_s=5, message="healthy deliveries")
    latencies = sorted(q.at - sent[q.headers["x-webhook-id"]] for q in healthy.requests)
    # The hanging endpoint holds its slots for the 2 s attempt timeout; healthy deliveries don't wait.
    assert latencies[-1] < 1.0, latencies
    assert len(hang.requests) < 30


async def test_deleting_an_instance_cancels_its_pending_deliveries(stack, http_servers):
    dead = await http_servers(lambda _r, n: 500)
    iid = await stack.create_instance(dead.url(), max_retries=5, retry_interval=60000)
    await stack.publish("connected", iid, {"instanceId": iid})
    await wait_for(lambda: len(dead.requests) == 1, message="first attempt")
    await stack.publish("instance.deleted", iid, {"instanceId": iid, "userId": stack.user_id})

    async def cancelled() -> bool:
        rows, _, _ = await stack.dispatcher.repo.deliveries.page(iid, status=None, limit=5, skip=0)
        return bool(rows) and rows[0].status == "cancelled"

    await wait_for(cancelled, message="cancelled")
    # A late update does not resurrect it, and later events are not delivered.
    assert (
        await stack.dispatcher.ingest(Event(type="connected", instance_id=iid, data={"instanceId": iid})) == 0
    )
    reply = await stack.call("webhooks.deliveries.list", iid)
    assert reply.status == 404


async def test_api_lists_redelivers_and_sends_a_test(stack, http_servers):
    r = await http_servers(lambda _r, n: 500 if n == 1 else 200)
    iid = await stack.create_instance(r.url(), max_retries=0, secret="k")
    first = await stack.publish("connected", iid, {"instanceId": iid})
    await wait_for(lambda: len(r.requests) == 1, message="first attempt")

    async def status_of_first() -> str | None:
        reply = await stack.call("webhooks.deliveries.list", iid, {"status": "failed"})
        return reply.data["deliveries"][0]["status"] if reply.ok and reply.data["deliveries"] else None

    await wait_for(status_of_first, message="failed delivery listed")
    page = (await stack.call("webhooks.deliveries.list", iid, {"limit": 10})).data
    assert page["pagination"] == {"total": 1, "limit": 10, "skip": 0, "hasMore": False}
    d = page["deliveries"][0]
    assert d["eventId"] == first.id and d["event"] == "connected" and d["attemptCount"] == 1
    assert d["attempts"][0]["statusCode"] == 500 and d["attempts"][0]["outcome"] == "5xx"
    # Other users get 404; admins see it; unknown delivery → 404.
    assert (await stack.call("webhooks.deliveries.list", iid, user_id="intruder")).status == 404
    assert (await stack.call("webhooks.deliveries.list", iid, user_id="root", role="admin")).ok
    assert (
        await stack.call("webhooks.deliveries.redeliver", iid, {"deliveryId": "nope"}, command=True)
    ).status == 404
    assert (await stack.call("webhooks.deliveries.list", iid, {"status": "bogus"})).status == 400

    re_reply = await stack.call("webhooks.deliveries.redeliver", iid, {"deliveryId": d["id"]}, command=True)
    assert re_reply.status == 202 and re_reply.data["delivery"]["redeliveryOf"] == d["id"]
    await wait_for(lambda: len(r.requests) == 2, message="redelivery")
    assert r.requests[1].headers["x-webhook-id"] == first.id and r.requests[1].body == r.requests[0].body

    t_reply = await stack.call("webhooks.test", iid, command=True)
    assert t_reply.status == 202
    await wait_for(lambda: len(r.requests) == 3, message="test webhook")
    body = json.loads(r.requests[2].body)
    assert body["event"] == "webhook_test" and body["data"]["instanceId"] == iid
    assert (
        r.requests[2].headers["x-webhook-signature"]
        == hmac.new(b"k", r.requests[2].body, "sha256").hexdigest()
    )
    page = (await stack.call("webhooks.deliveries.list", iid, {"limit": 2, "skip": 0})).data
    assert page["pagination"] == {"total": 3, "limit": 2, "skip": 0, "hasMore": True}

    await stack.update_instance(iid, r.url(), enabled=False)
    assert (await stack.call("webhooks.test", iid, command=True)).status == 400
