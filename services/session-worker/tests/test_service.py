"""The worker's commands and queries end to end, in process: the real app (its lifespan), the real
RabbitMQ, a SQLite store, the simulator engine. Requests are sent the way the gateway sends them
and replies are checked against the API reference's response bodies."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from tests.support.http import HttpServer
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    EXCHANGE_EVENTS,
    QUERY_ROUTING_KEY,
    SERVICE_QUEUES,
    Bus,
    Delivery,
    RpcClient,
    shard_for,
    shard_queue,
)
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Command, Event, Query, Reply
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_common.sim_client import sim_scan, sim_send
from wa_session_worker.engines.base import Message
from wa_session_worker.main import build_app
from wa_session_worker.media import download
from wa_session_worker.service.views import ApiError
from wa_session_worker.settings import WorkerSettings

S = 8
ALICE = Caller(user_id="alice")
BOB = Caller(user_id="bob")
ADMIN = Caller(user_id="root", role="admin")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class Ctx:
    def __init__(self, bus: Bus, rpc: RpcClient, events: list[Event], service: Any = None) -> None:
        self.bus, self.rpc, self.events, self.service = bus, rpc, events, service

    async def cmd(
        self, name: str, iid: str, caller: Caller = ALICE, payload: dict[str, Any] | None = None, **kw: Any
    ) -> Reply:
        command = Command(name=name, caller=caller, instance_id=iid, payload=payload or {}, **kw)
        return await self.rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, S)), command)

    async def q(
        self, name: str, iid: str | None = None, caller: Caller = ALICE, payload: dict[str, Any] | None = None
    ) -> Reply:
        return await self.rpc.call(
            EXCHANGE_COMMANDS,
            QUERY_ROUTING_KEY,
            Query(name=name, caller=caller, instance_id=iid, payload=payload or {}),
        )

    def of(self, type_: str, iid: str) -> list[Event]:
        return [e for e in self.events if e.type == type_ and e.instance_id == iid]


@pytest.fixture(scope="module")
async def media_server() -> AsyncIterator[str]:
    """The test HTTP server on loopback: a PNG at ``/img.png``, an HTML page at ``/page.html``."""
    async with HttpServer() as server:
        server.serve("/img.png", PNG, "image/png")
        server.serve("/page.html", b"<html></html>", "text/html")
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
async def ctx(
    amqp_url: str, tmp_path_factory: pytest.TempPathFactory, worker_settings: Callable[..., WorkerSettings]
) -> AsyncIterator[Ctx]:
    path: Path = tmp_path_factory.mktemp("svc") / "worker.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(upgrade, "wa_session_worker", url)
    settings = worker_settings("svc-worker", amqp_url, url, S, media_allow_private=True, media_max_bytes=1024)
    app = build_app(settings)
    runtime = app.state.runtime
    events: list[Event] = []
    async with runtime.lifespan(app):
        bus = Bus(amqp_url, service="svc-test", shard_count=S, prefetch=64, delivery_limit=5)
        await bus.connect()
        rpc = RpcClient(bus)
        await rpc.start()

        async def on_event(delivery: Delivery) -> None:
            events.append(Event.from_bytes(delivery.body))

        await bus.consume_transient([(EXCHANGE_EVENTS, "#")], on_event, name_prefix="wa.test.events")
        await wait_for(
            lambda: len(app.state.shards.owned()) == S, timeout_s=20, message="worker owns all shards"
        )
        yield Ctx(bus, rpc, events, app.state.service)
        await bus.close()


async def paired(
    ctx: Ctx, phone: str, caller: Caller = ALICE, push_name: str | None = None, **create: Any
) -> str:
    iid = new_id()
    reply = await ctx.cmd(C.CREATE_INSTANCE, iid, caller, {"name": f"n{phone}", **create})
    assert reply.status == 201, reply

    async def code() -> str | None:
        r = await ctx.q(Q.QR, iid, caller)
        return r.data["qrCode"] if r.status == 200 else None

    await sim_scan(ctx.bus, await wait_for(code, timeout_s=10, message="QR"), phone, push_name=push_name)

    async def connected() -> bool:
        return (await ctx.q(Q.STATUS, iid, caller)).data["status"] == "connected"

    await wait_for(connected, timeout_s=10, message="connected")
    return iid


async def test_instance_lifecycle(ctx: Ctx) -> None:
    iid = new_id()
    create = {
        "name": "Primary WhatsApp",
        "description": "Corporate account",
        "webhookUrl": "https://example.com/webhook",
        "webhookEnabled": True,
        "maxRetries": 5,
        "webhookSecret": "s3cret",
        "headers": {"Custom-Header": "v"},
    }
    reply = await ctx.cmd(C.CREATE_INSTANCE, iid, ALICE, create)
    assert reply.status == 201
    body = reply.data
    assert body["id"] == iid and body["userId"] == "alice" and body["status"] == "connecting"
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24
    again = await ctx.cmd(C.CREATE_INSTANCE, iid, ALICE, create)
    assert again.status == 201 and again.data["id"] == iid, "a retried create answers like the first"
    assert (await ctx.cmd(C.CREATE_INSTANCE, iid, BOB, create)).status == 409

    # QR: 202 while generating, then the raw pairing string.
    first = await ctx.q(Q.QR, iid)
    assert first.status in (200, 202)
    if first.status == 202:
        assert first.data["status"] == "generating"
    await wait_for(lambda: ctx.q(Q.QR, iid), timeout_s=10)

    detail = (await ctx.q(Q.GET_INSTANCE, iid)).data
    assert detail["webhookSettings"]["maxRetries"] == 5 and detail["webhookSettings"]["secret"] == "s3cret"
    assert detail["webhookSettings"]["instanceId"] == iid
    # The reference's three fields, plus the linked number and push name (null: not linked).
    assert set(detail["connectionStatus"]) == {"ready", "status", "hasQr", "phone", "pushName"}
    assert detail["connectionStatus"]["phone"] is None and detail["connectionStatus"]["pushName"] is None
    assert (await ctx.q(Q.GET_INSTANCE, iid, BOB)).status == 404
    assert (await ctx.cmd(C.UPDATE_INSTANCE, iid, BOB, {"name": "x"})).status == 404

    listed = (await ctx.q(Q.LIST_INSTANCES, None, ALICE)).data["instances"]
    assert iid in [i["id"] for i in listed] and "connectionStatus" in listed[0]
    assert iid not in [i["id"] for i in (await ctx.q(Q.LIST_INSTANCES, None, BOB)).data["instances"]]

    updated = await ctx.cmd(
        C.UPDATE_INSTANCE,
        iid,
        ALICE,
        {"name": "New", "webhookSettings": {"notifyRead": True, "maxRetries": 7}},
    )
    assert (
        updated.ok
        and updated.data["name"] == "New"
        and set(updated.data)
        == {
            "id",
            "name",
            "description",
            "webhookUrl",
            "webhookEnabled",
            "updatedAt",
        }
    )
    await wait_for(lambda: ctx.of("webhook_updated", iid) and ctx.of("instance.updated", iid), timeout_s=5)
    snapshot = ctx.of("instance.updated", iid)[-1]
    assert snapshot.user_id == "alice"
    assert (
        snapshot.data["webhookSettings"]["maxRetries"] == 7
        and snapshot.data["webhookSettings"]["secret"] == "s3cret"
    )
    # The retried create announced the instance again (its first run may have stopped before
    # the event was staged); replicas keep the newest snapshot, so a repeat is harmless.
    created = ctx.of("instance.created", iid)
    assert len(created) == 2 and {e.data["webhookUrl"] for e in created} == {"https://example.com/webhook"}

    status = (await ctx.q(Q.STATUS, iid)).data
    assert status["instanceId"] == iid and status["status"] == "qr" and status["hasQr"] is True
    assert status["lastActivity"] and status["connectionDetails"]["status"] == "qr"

    activity = (await ctx.q(Q.ACTIVITY, iid, ALICE, {"actions": ["qr_received"], "limit": 1})).data
    assert activity["logs"][0]["action"] == "qr_received" and activity["logs"][0]["details"]["attempt"] >= 1
    assert activity["pagination"]["limit"] == 1

    deleted = await ctx.cmd(C.DELETE_INSTANCE, iid)
    assert deleted.data == {"success": True, "message": f"Instance {iid} deleted successfully"}
    assert (await ctx.q(Q.GET_INSTANCE, iid)).status == 404
    await wait_for(lambda: ctx.of("instance.deleted", iid), timeout_s=5)


async def test_messages_contacts_history_events(ctx: Ctx, media_server: str) -> None:
    a = await paired(ctx, "15550000001")
    b = await paired(ctx, "15550000002", BOB)
    await wait_for(lambda: ctx.of("connected", a), timeout_s=5)

    sent = await ctx.cmd(C.SEND_TEXT, a, ALICE, {"phone": "15550000002", "message": "Hi! How are you?"})
    assert sent.ok and set(sent.data) == {"id"}
    # A retried send with the same idempotency key runs once and answers the same id.
    k1 = await ctx.cmd(
        C.SEND_TEXT, a, ALICE, {"phone": "15550000002", "message": "once"}, idempotency_key="k-1"
    )
    k2 = await ctx.cmd(
        C.SEND_TEXT, a, ALICE, {"phone": "15550000002", "message": "once"}, idempotency_key="k-1"
    )
    assert k1.ok and k2.data == k1.data
    up = await ctx.cmd(
        C.SEND_MEDIA,
        a,
        ALICE,
        {
            "phone": "15550000002",
            "dataBase64": base64.b64encode(PNG).decode(),
            "filename": "x.png",
            "caption": "pic",
        },
    )
    assert up.ok, up
    by_url = await ctx.cmd(C.SEND_MEDIA, a, ALICE, {"phone": "15550000002", "url": f"{media_server}/img.png"})
    assert by_url.ok, by_url
    page = await ctx.cmd(C.SEND_MEDIA, a, ALICE, {"phone": "15550000002", "url": f"{media_server}/page.html"})
    assert page.status == 400 and "text/html" in (page.error or "")
    big = await ctx.cmd(
        C.SEND_MEDIA, a, ALICE, {"phone": "15550000002", "dataBase64": base64.b64encode(b"x" * 2048).decode()}
    )
    assert big.status == 413
    bad = await ctx.cmd(C.SEND_TEXT, a, ALICE, {"phone": "abc", "message": "x"})
    assert bad.status == 400 and bad.error

    async def history(iid: str, caller: Caller, chat: str, **extra: Any) -> dict[str, Any]:
        r = await ctx.q(Q.CHAT_MESSAGES, iid, caller, {"chatId": chat, **extra})
        assert r.ok, r
        return dict(r.data)

    async def b_has_all() -> bool:
        return (await history(b, BOB, "15550000001"))["pagination"]["total"] == 4

    await wait_for(b_has_all, timeout_s=10, message="b received 4 messages")

    async def read_receipts() -> bool:
        msgs = (await history(a, ALICE, "15550000002@s.whatsapp.net"))["messages"]
        return all(m["status"] == "read" for m in msgs)

    await wait_for(read_receipts, timeout_s=10, message="receipts")
    mine = await history(a, ALICE, "15550000002", limit=2)
    assert mine["pagination"] == {"total": 4, "limit": 2, "skip": 0, "hasMore": True}
    newest = mine["messages"][0]
    assert newest["messageType"] == "image" and newest["hasMedia"] and newest["mimeType"] == "image/png"
    assert newest["statusUpdatedAt"] and newest["fromMe"] is True
    with_caption = mine["messages"][1]
    assert with_caption["caption"] == "pic" and with_caption["fileName"] == "x.png"

    received = ctx.of("message_received", b)
    assert (
        received and received[0].user_id == "bob" and received[0].data["from"] == "15550000001@s.whatsapp.net"
    )
    media_sent = [e for e in ctx.of("message_sent", a) if e.meta.get("hasMedia")]
    assert (
        media_sent
        and media_sent[0].meta["mediaSize"] == len(PNG)
        and media_sent[0].meta["mimeType"] == "image/png"
    )
    await wait_for(lambda: any(e.data["status"] == "read" for e in ctx.of("message_status", a)), timeout_s=5)

    # An external contact writes in (simulated phone without a session).
    await sim_send(ctx.bus, "15559990000", "15550000001@s.whatsapp.net", text="from outside")
    await wait_for(lambda: ctx.of("message_received", a), timeout_s=5, message="inbound to a")

    polled = (
        await ctx.q(Q.EVENTS, a, ALICE, {"types": ["message_received", "connection_opened"], "limit": 50})
    ).data
    types = {e["type"] for e in polled["events"]}
    assert types == {"message_received", "connected"} and polled["count"] == len(polled["events"])
    assert polled["latestTimestamp"] == polled["events"][0]["timestamp"]
    inbound = next(e for e in polled["events"] if e["type"] == "message_received")["data"]
    assert inbound["remoteJid"] == "15559990000@s.whatsapp.net" and inbound["body"] == "from outside"
    later = (await ctx.q(Q.EVENTS, a, ALICE, {"since": polled["latestTimestamp"]})).data
    assert later["events"] == [] or all(e["timestamp"] > polled["latestTimestamp"] for e in later["events"])
    opened = (await ctx.q(Q.ACTIVITY, a, ALICE, {"actions": ["connection_opened"]})).data
    assert opened["logs"] and opened["logs"][0]["action"] == "connected"

    # Contacts.
    wa_contacts = (await ctx.cmd(C.FETCH_CONTACTS, a)).data["contacts"]
    assert wa_contacts and {"id", "name", "number", "isGroup"} <= set(wa_contacts[0])
    imported = (await ctx.cmd(C.IMPORT_CONTACTS, a)).data
    assert imported["success"] and imported["importedCount"] == len(wa_contacts)
    added = await ctx.cmd(C.ADD_CONTACT, a, ALICE, {"phone": "15550000002", "name": "Bob"})
    assert added.ok, added
    assert added.data["contact"] == {
        "id": "15550000002@s.whatsapp.net",
        "number": "15550000002",
        "name": "Bob",
    }
    saved = await ctx.cmd(C.SAVE_CONTACT, a, ALICE, {"number": "15557777777", "name": "Zed", "about": "hey"})
    assert (
        saved.ok and saved.data["remoteJid"] == "15557777777@s.whatsapp.net" and saved.data["about"] == "hey"
    )
    found = (await ctx.q(Q.CONTACTS_DB, a, ALICE, {"search": "bob"})).data
    assert [c["name"] for c in found["contacts"]] == ["Bob"] and found["pagination"]["total"] == 1
    everything = (await ctx.q(Q.CONTACTS_DB, a, ALICE, {"limit": 1000})).data
    expected = {c["id"] for c in wa_contacts} | {"15550000002@s.whatsapp.net", "15557777777@s.whatsapp.net"}
    assert everything["pagination"]["total"] == len(expected)

    # Logout and reconnect (a new QR flow), then delete by user deletion.
    out = await ctx.cmd(C.LOGOUT, a)
    assert out.data == {"success": True, "message": f"Instance {a} logged out"}
    assert (await ctx.q(Q.STATUS, a)).data["status"] == "logged_out"
    assert (await ctx.cmd(C.SEND_TEXT, a, ALICE, {"phone": "15550000002", "message": "x"})).status == 409
    again = await ctx.cmd(C.RECONNECT, a)
    assert again.data["success"] is True
    await wait_for(lambda: ctx.q(Q.QR, a), timeout_s=10)
    code = (await ctx.cmd(C.PAIR_PHONE, a, ALICE, {"phone": "15550000001"})).data
    assert "-" in code["pairingCode"]


async def test_user_deleted_removes_instances(ctx: Ctx) -> None:
    user = Caller(user_id=f"gone-{new_id()}")
    ids = [new_id() for _ in range(3)]
    for iid in ids:
        assert (await ctx.cmd(C.CREATE_INSTANCE, iid, user, {"name": "x"})).status == 201
    event = Event(type="user.deleted", user_id=user.user_id, data={"userId": user.user_id})
    await ctx.bus.publish_event(event)
    assert SERVICE_QUEUES["session-worker"].bindings

    async def gone() -> bool:
        replies = await asyncio.gather(*(ctx.q(Q.GET_INSTANCE, iid, ADMIN) for iid in ids))
        return all(r.status == 404 for r in replies)

    await wait_for(gone, timeout_s=10, message="instances of a deleted user deleted")


async def test_admin_queries_and_expired_commands(ctx: Ctx) -> None:
    assert (await ctx.q(Q.CLUSTER, None, ALICE)).status == 403
    view = (await ctx.q(Q.CLUSTER, None, ADMIN)).data
    assert view["shardCount"] == S and view["workers"][0]["shards"] == list(range(S))
    store = (await ctx.q(Q.STORE_STATUS, None, ADMIN)).data
    assert store["provider"] == "sqlite"
    # A command whose deadline passed while queued is dropped, not executed.
    iid = new_id()
    late = Command(
        name=C.CREATE_INSTANCE,
        caller=ALICE,
        instance_id=iid,
        payload={"name": "late"},
        deadline=utcnow() - timedelta(seconds=1),
    )
    await ctx.bus.publish(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, S)), late.to_bytes())
    marker = new_id()
    while shard_for(marker, S) != shard_for(iid, S):  # same queue: handled after the late one
        marker = new_id()
    assert (await ctx.cmd(C.CREATE_INSTANCE, marker, ALICE, {"name": "marker"})).status == 201
    assert (await ctx.q(Q.GET_INSTANCE, iid, ADMIN)).status == 404


async def test_media_guard_refuses_private_addresses() -> None:
    with pytest.raises(ApiError) as refused:
        await download("http://127.0.0.1:9/x.png", max_bytes=10, timeout_s=2, allow_private=False)
    assert refused.value.status == 400 and "refused" in refused.value.message
    with pytest.raises(ApiError):
        await download(
            "http://169.254.169.254/latest/meta-data", max_bytes=10, timeout_s=2, allow_private=False
        )
    with pytest.raises(ApiError):
        await download("file:///etc/passwd", max_bytes=10, timeout_s=2, allow_private=False)


async def test_commands_for_unknown_instances_leave_no_lock_behind(ctx: Ctx) -> None:
    """Each command holds its instance's lock; a command naming a random id (404) must not leave
    one behind, or a caller could grow the worker's memory without bound."""
    import gc

    locks = ctx.service._locks
    before = len(locks)
    for _ in range(50):
        reply = await ctx.cmd(C.RECONNECT, new_id())
        assert reply.status == 404, reply
    gc.collect()
    assert len(locks) <= before
    held = ctx.service.lock("held-instance")
    assert ctx.service.lock("held-instance") is held  # one lock per instance while referenced


# --- the events feed, logout, contacts, QR expiry, linked account ---------------------------------


async def _feed(ctx: Ctx, iid: str, **query: Any) -> dict[str, Any]:
    reply = await ctx.q(Q.EVENTS, iid, ALICE, {k: v for k, v in query.items() if v is not None})
    assert reply.ok, reply
    return dict(reply.data)


async def test_events_feed_polled_with_latest_timestamp_shows_every_sender_once(ctx: Ctx) -> None:
    """A client polls ``events`` as the reference's usage examples do: ``since`` = the last
    ``latestTimestamp``, reading ``data.from`` and ``data.body`` of each ``message_received``.
    Bursts of messages arrive while it polls, larger than its page (``limit``), from engine
    callbacks running concurrently (as the engines call them: one task per account or chat):
    it sees every message exactly once, with its sender; sent messages carry ``to``."""
    a = await paired(ctx, "15550000011")
    contacts = ["15550008001@s.whatsapp.net", "15550008002@s.whatsapp.net"]
    expected: dict[str, tuple[str, str]] = {}  # message id -> (from, body)
    seen: list[tuple[str, str, str]] = []  # (message id, from, body) as the client printed them
    since: str | None = None
    injecting = True

    async def poll_once() -> dict[str, Any]:
        nonlocal since
        body = await _feed(ctx, a, since=since, limit=5)
        for event in body["events"]:
            if event["type"] == "message_received":
                data = event["data"]
                seen.append((data["messageId"], data["from"], data["body"]))
        since = body["latestTimestamp"]  # as naive clients do, even after an empty page
        return body

    await poll_once()  # the client starts before the messages come

    async def client() -> None:
        while injecting:
            await poll_once()

    poller = asyncio.create_task(client())
    try:
        now = int(utcnow().timestamp())
        for batch in range(4):
            burst = []
            for i in range(10):
                sender = contacts[i % 2]
                message_id = f"3EB0FEED{batch:02d}{i:02d}{new_id()[-8:]}"
                expected[message_id] = (sender, f"burst {batch} message {i}")
                burst.append(
                    Message(
                        instance_id=a,
                        message_id=message_id,
                        chat_jid=sender,
                        sender_jid=sender,
                        from_me=False,
                        timestamp=now,
                        type="conversation",
                        text=f"burst {batch} message {i}",
                        push_name="Feed Tester",
                    )
                )
            await asyncio.gather(*(ctx.service.on_engine_event(m) for m in burst))
        sent = await ctx.cmd(C.SEND_TEXT, a, ALICE, {"phone": "15550008001", "message": "answer"})
        assert sent.ok, sent
    finally:
        injecting = False
        await poller

    async def caught_up() -> bool:
        before = since
        body = await poll_once()
        if body["count"] == 0:
            assert body["latestTimestamp"] == before, "an empty page keeps the client's place"
        return body["count"] == 0 and not body["hasMore"]

    await wait_for(caught_up, timeout_s=10, message="the client caught up with the feed")
    ids = [message_id for message_id, _, _ in seen]
    assert len(ids) == len(set(ids)), "an event was shown twice"
    assert set(ids) == set(expected), f"missed {set(expected) - set(ids)}"
    assert all(expected[m] == (sender, body) for m, sender, body in seen)

    everything = await _feed(ctx, a, limit=1000)
    stamps = [e["timestamp"] for e in everything["events"]]
    assert len(stamps) == len(set(stamps)), "two events of one instance share a timestamp"
    assert stamps == sorted(stamps, reverse=True)
    answer = next(e for e in everything["events"] if e["type"] == "message_sent")["data"]
    assert answer["to"] == "15550008001@s.whatsapp.net" and answer["remoteJid"] == answer["to"]
    assert answer["fromMe"] is True and answer["body"] == "answer"
    received = next(e for e in everything["events"] if e["type"] == "message_received")["data"]
    assert received["from"] == received["remoteJid"] and received["fromMe"] is False


async def test_logout_is_reported_once_with_reason_logout(ctx: Ctx) -> None:
    iid = await paired(ctx, "15550000012")
    out = await ctx.cmd(C.LOGOUT, iid)
    assert out.status == 200 and out.data == {"success": True, "message": f"Instance {iid} logged out"}

    async def disconnected() -> list[dict[str, Any]]:
        return [e["data"] for e in (await _feed(ctx, iid, types=["disconnected"], limit=100))["events"]]

    assert await disconnected() == [{"instanceId": iid, "reason": "logout", "willReconnect": False}]
    # A second logout answers as the first and reports nothing new.
    again = await ctx.cmd(C.LOGOUT, iid)
    assert again.status == 200 and again.data == out.data
    assert len(await disconnected()) == 1
    # On the bus too: an event published after the second logout arrives; one disconnected before it.
    barrier = await ctx.cmd(C.UPDATE_INSTANCE, iid, ALICE, {"webhookUrl": "https://example.com/after"})
    assert barrier.ok, barrier
    await wait_for(lambda: ctx.of("webhook_updated", iid), timeout_s=5, message="barrier event")
    assert [e.data["reason"] for e in ctx.of("disconnected", iid)] == ["logout"]

    # The QR endpoint says the instance is logged out (still 202), until it is reconnected.
    qr = await ctx.q(Q.QR, iid)
    assert qr.status == 202 and qr.data["status"] == "logged_out" and "reconnect" in qr.data["message"]
    assert set(qr.data) == {"message", "status"}
    assert (await ctx.cmd(C.RECONNECT, iid)).ok

    async def fresh_code() -> dict[str, Any] | None:
        reply = await ctx.q(Q.QR, iid)
        if reply.status == 202:
            assert reply.data["status"] == "generating", reply.data
            return None
        return dict(reply.data)

    code = await wait_for(fresh_code, timeout_s=10, message="a QR code after reconnecting")
    assert set(code) == {"qrCode", "expiresAt"} and code["qrCode"]


async def test_qr_expiry_and_the_linked_account_in_the_connection_status(ctx: Ctx) -> None:
    iid = new_id()
    assert (await ctx.cmd(C.CREATE_INSTANCE, iid, ALICE, {"name": "linked"})).status == 201

    async def code() -> dict[str, Any] | None:
        reply = await ctx.q(Q.QR, iid)
        if reply.status == 202:
            assert reply.data == {
                "message": "QR code generation in progress. Please try again in a few seconds.",
                "status": "generating",
            }
            return None
        assert reply.status == 200, reply
        return dict(reply.data)

    shown = await wait_for(code, timeout_s=10, message="QR")
    assert set(shown) == {"qrCode", "expiresAt"}
    expires = datetime.fromisoformat(shown["expiresAt"].replace("Z", "+00:00"))
    assert shown["expiresAt"].endswith("Z") and len(shown["expiresAt"]) == 24
    # The same instant as the qr_received event's meta (the first code: valid sim_qr_first_s).
    await wait_for(lambda: ctx.of("qr_received", iid), timeout_s=5)
    qr_event = ctx.of("qr_received", iid)
    assert shown["expiresAt"] in [e.meta["expiresAt"] for e in qr_event]
    assert utcnow() < expires <= utcnow() + timedelta(seconds=61)

    await sim_scan(ctx.bus, shown["qrCode"], "15550000014", push_name="Alice Phone")

    async def connected() -> dict[str, Any] | None:
        detail = (await ctx.q(Q.GET_INSTANCE, iid)).data
        return detail if detail["status"] == "connected" else None

    detail = await wait_for(connected, timeout_s=10, message="connected")
    linked = {
        "ready": True,
        "status": "connected",
        "hasQr": False,
        "phone": "15550000014",
        "pushName": "Alice Phone",
    }
    assert detail["connectionStatus"] == linked
    assert (await ctx.q(Q.STATUS, iid)).data["connectionDetails"] == linked
    listed = (await ctx.q(Q.LIST_INSTANCES, None, ALICE)).data["instances"]
    assert next(i for i in listed if i["id"] == iid)["connectionStatus"] == linked
    assert (await ctx.q(Q.QR, iid)).status == 409

    # Resumed from its device record (as on another worker): the same account.
    assert (await ctx.cmd(C.RECONNECT, iid)).ok
    detail = await wait_for(connected, timeout_s=10, message="connected again")
    assert detail["connectionStatus"] == linked

    assert (await ctx.cmd(C.LOGOUT, iid)).ok
    status = (await ctx.q(Q.STATUS, iid)).data["connectionDetails"]
    assert status["phone"] is None and status["pushName"] is None and status["status"] == "logged_out"


async def test_an_added_contact_shows_by_its_name_in_the_live_contacts(ctx: Ctx) -> None:
    a = await paired(ctx, "15550000013")

    async def live() -> dict[str, dict[str, Any]]:
        reply = await ctx.cmd(C.FETCH_CONTACTS, a)
        assert reply.ok, reply
        return {c["id"]: c for c in reply.data["contacts"]}

    before = await live()
    assert "15550007777@s.whatsapp.net" not in before
    added = await ctx.cmd(C.ADD_CONTACT, a, ALICE, {"phone": "15550007777", "name": "Carol"})
    assert added.ok and added.data["contact"]["name"] == "Carol", added
    existing = next(jid for jid, c in before.items() if not c["isGroup"])
    renamed = await ctx.cmd(C.ADD_CONTACT, a, ALICE, {"phone": existing.split("@")[0], "name": "Renamed"})
    assert renamed.ok, renamed
    # Someone who wrote in (known by push name only) is named once added.
    await sim_send(ctx.bus, "15550006666", "15550000013@s.whatsapp.net", text="hi", push_name="Dave?")
    await wait_for(
        lambda: [e for e in ctx.of("message_received", a) if e.data["from"].startswith("15550006666")],
        timeout_s=5,
        message="message from 15550006666",
    )
    assert (await ctx.cmd(C.ADD_CONTACT, a, ALICE, {"phone": "15550006666", "name": "Dave"})).ok

    after = await live()
    assert after["15550007777@s.whatsapp.net"] == {
        "id": "15550007777@s.whatsapp.net",
        "name": "Carol",
        "number": "15550007777",
        "isGroup": False,
    }
    assert after[existing]["name"] == "Renamed"
    assert after["15550006666@s.whatsapp.net"]["name"] == "Dave"

    # Resumed from its device record (as on another worker after a failover): still there.
    assert (await ctx.cmd(C.RECONNECT, a)).ok

    async def connected() -> bool:
        return (await ctx.q(Q.STATUS, a)).data["status"] == "connected"

    await wait_for(connected, timeout_s=10, message="connected again")
    resumed = await live()
    assert resumed["15550007777@s.whatsapp.net"]["name"] == "Carol"
    assert resumed[existing]["name"] == "Renamed"
