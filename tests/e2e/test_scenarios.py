"""End-to-end scenarios 1-5 (issue 9) on one shared cluster: real processes, public REST API
only (the simulated phones and contacts play through the simulator-only admin routes and the
simulator CLI, as a person would), a real webhook receiver verifying every signature.

The scenarios run in file order on one user's instance (1 links it, 2 and 3 use it, 4 logs it
out and deletes it); ``onboarded`` performs scenario 1 once, so 2-4 also run alone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from tests.e2e import steps
from tests.e2e.conftest import System
from tests.support import sim
from tests.support.http import HttpServer
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.e2e

CONTACT = "79001234567"  # an external simulated contact (answers with delivered, then read)
WRITER = "79007654321"  # an external simulated contact that writes in
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\x00" * 64
GREETING = "Привет! Как дела? 👋🙂 — «ёлка»"


@dataclass
class Onboarded:
    headers: dict[str, str]
    iid: str
    phone: str
    hook: str  # receiver path of the instance's webhooks
    qr_statuses: list[int]


def verified(hooks: list[Any]) -> bool:
    return all(h.verified is True for h in hooks)


@pytest.fixture(scope="module")
async def onboarded(system: System, receiver: WebhookReceiver) -> Onboarded:
    """Scenario 1's steps (asserted as they go)."""
    api, admin = system.api, system.admin
    # Admin logs in (the fixture did) and creates a user; the user logs in and reads /auth/me.
    email, password = await steps.create_user(api, admin)
    token = (await steps.login(api, email, password))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    me = await api.get("/api/auth/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email and me.json()["role"] == "user"
    # An instance with a webhook.
    hook = "inst-" + secrets.token_hex(4)
    secret = "whsec-" + secrets.token_hex(8)
    created = await steps.create_instance(api, headers, "Primary", receiver.url(hook, secret), secret)
    iid = created["id"]
    assert created["webhookEnabled"] is True and created["userId"] == me.json()["id"]
    qr_statuses = await steps.wait_qr(api, headers, iid)
    for fmt, mime, magic in (("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<")):
        image = await api.get(f"/api/instances/{iid}/qr", headers=headers, params={"format": fmt})
        assert image.status_code == 200, image.text
        assert image.headers["content-type"].startswith(mime)
        assert image.content.lstrip().startswith(magic)
    phone = steps.new_phone()
    await steps.scan(api, admin, iid, phone)
    await steps.wait_status(api, headers, iid, "connected")
    return Onboarded(headers, iid, phone, hook, qr_statuses)


async def test_1_onboarding(system: System, receiver: WebhookReceiver, onboarded: Onboarded) -> None:
    api, o = system.api, onboarded
    assert o.qr_statuses[-1] == 200 and set(o.qr_statuses) <= {200, 202}
    # `connected` arrives by webhook (signed) and in /events; the status is connected.
    hooks = await receiver.wait(lambda: receiver.unique(o.hook, "connected"), message="connected webhook")
    assert verified(hooks) and hooks[0].data["instanceId"] == o.iid
    assert receiver.unique(o.hook, "qr_received"), "qr_received webhook"
    found = await steps.events(api, o.headers, o.iid, "connected")
    assert found and found[0]["data"]["instanceId"] == o.iid
    status = await api.get(f"/api/instances/{o.iid}/status", headers=o.headers)
    assert status.json()["status"] == "connected" and status.json()["ready"] is True
    listed = await api.get("/api/instances", headers=o.headers)
    assert [i["id"] for i in listed.json()["instances"]] == [o.iid]


@pytest.fixture(scope="module")
async def media_url() -> AsyncIterator[str]:
    """The test HTTP server on loopback serving one PNG (downloaded by the worker for send-media)."""
    async with HttpServer() as server:
        yield server.serve("/picture.png", PNG, "image/png")


async def test_2_sending(
    system: System, receiver: WebhookReceiver, onboarded: Onboarded, media_url: str
) -> None:
    api, o = system.api, onboarded
    ids = [await steps.send_text(api, o.headers, o.iid, "+7 900 123-45-67", "Hello from the e2e test")]
    media = await api.post(
        f"/api/whatsapp/{o.iid}/send-media",
        headers=o.headers,
        json={"phone": CONTACT, "url": media_url, "caption": "by URL", "filename": "picture.png"},
    )
    assert media.status_code == 200, media.text
    ids.append(media.json()["id"])
    upload = await api.post(
        f"/api/whatsapp/{o.iid}/send-file",
        headers=o.headers,
        data={"phone": CONTACT, "caption": "uploaded"},
        files={"file": ("report.pdf", b"%PDF-1.4 e2e\n" * 20, "application/pdf")},
    )
    assert upload.status_code == 200, upload.text
    ids.append(upload.json()["id"])
    assert all(ids) and len(set(ids)) == 3

    # message_sent, then the contact's delivered and read receipts, as signed webhooks.
    def statuses() -> set[tuple[str, str]]:
        return {(h.data["messageId"], h.data["status"]) for h in receiver.unique(o.hook, "message_status")}

    want = {(i, s) for i in ids for s in ("delivered", "read")}
    try:
        await receiver.wait(lambda: want <= statuses(), timeout_s=30, message="delivered/read webhooks")
    except AssertionError:
        produced = await steps.events(api, o.headers, o.iid, "message_sent,message_status")
        history = await steps.history(api, o.headers, o.iid, steps.jid(CONTACT))
        raise AssertionError(
            f"missing webhooks {sorted(want - statuses())}; events: "
            f"{[(e['type'], e['data']['messageId'], e['data'].get('status')) for e in produced]}; "
            f"history: {[(m['messageId'], m['status']) for m in history]}"
        ) from None
    sent = {h.data["messageId"] for h in receiver.unique(o.hook, "message_sent")}
    assert set(ids) <= sent
    assert verified(receiver.hooks(o.hook))

    # History shows them with their final status; stats count them.
    async def read_in_history() -> list[dict[str, Any]] | None:
        messages = await steps.history(api, o.headers, o.iid, steps.jid(CONTACT))
        mine = [m for m in messages if m["messageId"] in ids]
        return mine if len(mine) == 3 and all(m["status"] == "read" for m in mine) else None

    mine = await wait_for(read_in_history, timeout_s=20, interval_s=0.2, message="history with read statuses")
    by_id = {m["messageId"]: m for m in mine}
    assert by_id[ids[0]]["content"] == "Hello from the e2e test" and not by_id[ids[0]]["hasMedia"]
    assert by_id[ids[1]]["hasMedia"] and by_id[ids[1]]["caption"] == "by URL"
    assert by_id[ids[2]]["hasMedia"] and by_id[ids[2]]["fileName"] == "report.pdf"
    assert all(m["fromMe"] for m in mine)

    async def counted() -> dict[str, Any] | None:
        usage = await steps.instance_stats(api, o.headers, o.iid)
        return usage if usage["messagesSent"] == 3 and usage["mediaSent"] == 2 else None

    usage = await wait_for(counted, timeout_s=20, interval_s=0.2, message="stats of 3 sends")
    assert usage["totalMediaSize"] > 0


async def test_3_receiving(system: System, receiver: WebhookReceiver, onboarded: Onboarded) -> None:
    api, o = system.api, onboarded
    # The simulated contact writes text (Cyrillic and emoji) ...
    response = await api.post(
        "/api/admin/sim/messages",
        headers=system.admin,
        json={"from": WRITER, "to": o.phone, "message": GREETING, "pushName": "Иван"},
    )
    assert response.status_code == 200, response.text
    text_id = response.json()["id"]
    # ... and an image, from its phone (the simulator CLI plays the phone).
    image = Path(system.cluster.work_dir) / "photo.png"
    image.write_bytes(PNG)
    env = {**os.environ, "AMQP_URL": system.amqp_url, "WA_ENGINE": "simulator"}
    cli = await sim.send_file(WRITER, o.phone, image, text="фото 📷", name="Иван", env=env)
    assert cli.returncode == 0, cli.stdout + cli.stderr

    hooks = await receiver.wait(
        lambda: (h := receiver.unique(o.hook, "message_received")) and len(h) >= 2 and h,
        message="two message_received webhooks",
    )
    assert verified(hooks)
    texts = [h for h in hooks if h.data["messageId"] == text_id]
    assert texts and texts[0].data["body"] == GREETING and texts[0].data["from"] == steps.jid(WRITER)
    assert GREETING.encode() in texts[0].raw  # sent as UTF-8, not \u escapes
    pictures = [h for h in hooks if h.data["hasMedia"]]
    assert pictures and pictures[0].data["type"] == "image"

    messages = await steps.history(api, o.headers, o.iid, steps.jid(WRITER))
    assert {m["content"] for m in messages if not m["hasMedia"]} == {GREETING}
    assert any(m["hasMedia"] and m["mimeType"] == "image/png" for m in messages)
    assert not any(m["fromMe"] for m in messages)

    imported = await api.post(f"/api/instances/{o.iid}/contacts/import", headers=o.headers)
    assert imported.status_code == 200, imported.text
    assert imported.json()["success"] is True and imported.json()["importedCount"] >= 1
    db = await api.get(f"/api/instances/{o.iid}/contacts/db", headers=o.headers, params={"search": WRITER})
    assert db.status_code == 200, db.text
    assert [c["remoteJid"] for c in db.json()["contacts"]] == [steps.jid(WRITER)]
    usage = await wait_for(
        lambda: _received(api, o), timeout_s=20, interval_s=0.2, message="stats of 2 received"
    )
    assert usage["mediaReceived"] == 1


async def _received(api: Any, o: Onboarded) -> dict[str, Any] | None:
    usage = await steps.instance_stats(api, o.headers, o.iid)
    return usage if usage["messagesReceived"] == 2 else None


async def test_4_logout_and_delete(system: System, receiver: WebhookReceiver, onboarded: Onboarded) -> None:
    api, o = system.api, onboarded
    response = await api.post(f"/api/whatsapp/{o.iid}/logout", headers=o.headers)
    assert response.status_code == 200 and response.json()["success"] is True, response.text
    hooks = await receiver.wait(
        lambda: receiver.unique(o.hook, "disconnected"), message="disconnected webhook"
    )
    assert verified(hooks) and hooks[-1].data["willReconnect"] is False
    status = await api.get(f"/api/instances/{o.iid}/status", headers=o.headers)
    assert status.json()["ready"] is False
    qr = await api.get(f"/api/instances/{o.iid}/qr", headers=o.headers)
    # Still 202 (contract), but a polling client reading `status` learns to stop waiting.
    assert qr.status_code == 202 and qr.json()["status"] == "logged_out"
    assert "reconnect" in qr.json()["message"], "after a logout the answer says what brings a code"
    # A new QR code after reconnecting, as for a fresh link.
    response = await api.post(f"/api/instances/{o.iid}/reconnect", headers=o.headers)
    assert response.status_code == 200, response.text
    await steps.wait_qr(api, o.headers, o.iid)

    response = await api.delete(f"/api/instances/{o.iid}", headers=o.headers)
    assert response.status_code == 200, response.text
    deleted_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert (await api.get(f"/api/instances/{o.iid}", headers=o.headers)).status_code == 404
    # Its number is gone from the network, and no webhook of it arrives any more: a barrier
    # instance's qr_received webhook, created after the deletion, arrives first.
    gone = await api.post(
        "/api/admin/sim/messages", headers=system.admin, json={"from": WRITER, "to": o.phone, "message": "x"}
    )
    assert gone.status_code == 409, gone.text
    barrier = await steps.create_instance(api, o.headers, "barrier", receiver.url("barrier"), None)
    await receiver.wait(lambda: receiver.hooks("barrier", "qr_received"), message="barrier webhook")
    # (Events from before the deletion may still be delivered; none may happen after it.)
    late = [h for h in receiver.hooks(o.hook) if h.body["timestamp"] > deleted_at]
    assert not late, [h.body for h in late]
    await api.delete(f"/api/instances/{barrier['id']}", headers=o.headers)


async def test_5_two_users_on_two_workers(system: System, receiver: WebhookReceiver) -> None:
    api, admin = system.api, system.admin
    alice = await steps.user_headers(api, admin)
    bob = await steps.user_headers(api, admin)
    a = await steps.create_instance(api, alice, "alice", receiver.url("alice", "sa"), "sa")
    a_worker = await steps.worker_of(system.api, system.admin, a["id"])
    # Bob's instance on the other worker: create until its shard is held by the other one.
    extra: list[str] = []
    while True:
        b = await steps.create_instance(api, bob, "bob", receiver.url("bob", "sb"), "sb")
        if await steps.worker_of(system.api, system.admin, b["id"]) != a_worker:
            break
        extra.append(b["id"])
        assert len(extra) < 20, "no instance landed on the second worker"
    for iid in extra:
        assert (await api.delete(f"/api/instances/{iid}", headers=bob)).status_code == 200
    a_phone, b_phone = steps.new_phone(), steps.new_phone()
    await asyncio.gather(
        steps.link(api, admin, alice, a["id"], a_phone), steps.link(api, admin, bob, b["id"], b_phone)
    )

    to_bob = await steps.send_text(api, alice, a["id"], b_phone, "hi Bob, from Alice ✉️")
    got = await receiver.wait(
        lambda: [h for h in receiver.unique("bob", "message_received") if h.data["messageId"] == to_bob],
        message="Bob receives Alice's message",
    )
    assert got[0].verified and got[0].data["from"] == steps.jid(a_phone)
    to_alice = await steps.send_text(api, bob, b["id"], a_phone, "hi Alice, Bob here")
    got = await receiver.wait(
        lambda: [h for h in receiver.unique("alice", "message_received") if h.data["messageId"] == to_alice],
        message="Alice receives Bob's reply",
    )
    assert got[0].verified and got[0].data["body"] == "hi Alice, Bob here"
    # Bob's instance acknowledges Alice's message: delivered comes back to Alice.
    await receiver.wait(
        lambda: any(
            h.data["messageId"] == to_bob and h.data["status"] == "delivered"
            for h in receiver.unique("alice", "message_status")
        ),
        message="delivered receipt between instances",
    )
    chat = await steps.history(api, alice, a["id"], steps.jid(b_phone))
    assert {(m["messageId"], m["fromMe"]) for m in chat} >= {(to_bob, True), (to_alice, False)}

    # Neither user sees the other's instance.
    for headers, other in ((alice, b["id"]), (bob, a["id"])):
        for path in ("", "/status", "/qr", "/events"):
            response = await api.get(f"/api/instances/{other}{path}", headers=headers)
            assert response.status_code == 404, (path, response.text)
        response = await api.post(
            f"/api/whatsapp/{other}/send", headers=headers, json={"phone": CONTACT, "message": "no"}
        )
        assert response.status_code == 404, response.text
    assert [i["id"] for i in (await api.get("/api/instances", headers=alice)).json()["instances"]] == [
        a["id"]
    ]
    assert [i["id"] for i in (await api.get("/api/instances", headers=bob)).json()["instances"]] == [b["id"]]


@pytest.mark.timeout(240)
async def test_7_one_instance_keeps_each_clients_order(system: System, receiver: WebhookReceiver) -> None:
    """Issue 15: sends of one instance are no longer serialised by a lock, yet 20 concurrent
    clients that each send 25 numbered messages (each waiting for its previous 200) find every
    one of their messages in the instance's history, and in its ``message_sent`` webhooks'
    timestamps, in the order they sent them."""
    api = system.api
    headers = await steps.user_headers(api, system.admin)
    hook, secret = f"order-{secrets.token_hex(3)}", "order-secret"
    created = await steps.create_instance(api, headers, "order", receiver.url(hook, secret), secret)
    iid = created["id"]
    await steps.link(api, system.admin, headers, iid, steps.new_phone())
    clients, each = 20, 25

    async def client(c: int) -> None:
        for n in range(each):
            await steps.send_text(api, headers, iid, CONTACT, f"order {c:02d} {n:02d}")

    await asyncio.gather(*(client(c) for c in range(clients)))
    history = await steps.history(api, headers, iid, steps.jid(CONTACT))
    oldest_first = [m["content"] for m in reversed(history) if m["content"].startswith("order ")]
    assert len(oldest_first) == clients * each
    for c in range(clients):
        mine = [text for text in oldest_first if text.startswith(f"order {c:02d} ")]
        assert mine == [f"order {c:02d} {n:02d}" for n in range(each)], f"client {c}: {mine}"

    def sent_hooks() -> list[Any]:
        return receiver.unique(hook, "message_sent")

    await receiver.wait(lambda: len(sent_hooks()) >= clients * each, timeout_s=60, message="500 webhooks")
    assert verified(sent_hooks())
    in_event_order = [h.data["body"] for h in sorted(sent_hooks(), key=lambda h: h.body["timestamp"])]
    for c in range(clients):
        mine = [text for text in in_event_order if text.startswith(f"order {c:02d} ")]
        assert mine == [f"order {c:02d} {n:02d}" for n in range(each)], f"client {c} (webhooks): {mine}"
