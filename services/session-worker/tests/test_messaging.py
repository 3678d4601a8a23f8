"""Sending text and media: idempotency, what a send stores and reports, media checks.

Fast tests run the service's parts on the in-memory store with a scripted engine (``parts``);
the others the worker in process over the real RabbitMQ with the simulator (``ctx``)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from conftest import wait_for
from tests.support.http import HttpServer
from wa_common.bus.router import RequestError
from wa_common.schemas import Caller
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_common.sim_client import sim_send
from wa_session_worker.engines.base import EngineError
from wa_session_worker.media import download

ALICE = Caller(user_id="alice")
BOB = Caller(user_id="bob")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TEXT = {"phone": "15550000002", "message": "once"}


@pytest.fixture(scope="module")
async def media_server() -> AsyncIterator[str]:
    """The test HTTP server on loopback: a PNG at ``/img.png``, an HTML page at ``/page.html``."""
    async with HttpServer() as server:
        server.serve("/img.png", PNG, "image/png")
        server.serve("/page.html", b"<html></html>", "text/html")
        yield f"http://127.0.0.1:{server.port}"


# --- the service's parts -------------------------------------------------------------------------


def duplicates() -> float:
    sample = REGISTRY.get_sample_value(
        "wa_worker_commands_total", {"name": C.SEND_TEXT, "outcome": "duplicate"}
    )
    return sample or 0.0


async def test_a_retried_send_runs_once_and_answers_the_same(parts: Any) -> None:
    iid = await parts.instance()
    before = duplicates()
    first = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-1")
    again = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-1")
    assert first.ok and again == first
    assert parts.engine.sent == [(iid, "15550000002@s.whatsapp.net", "once")]
    assert duplicates() == before + 1
    # Without a key, the request id is the key: a redelivered command runs once too.
    other = await parts.cmd(C.SEND_TEXT, iid, TEXT)
    assert other.ok and other.data != first.data and len(parts.engine.sent) == 2


async def test_an_interrupted_send_is_not_sent_again(parts: Any) -> None:
    """The key is pending (an earlier run stopped after it may have sent): 409, nothing sent."""
    iid = await parts.instance()
    await parts.repo.idempotency_begin(iid, "k-2", C.SEND_TEXT, at=parts.clock())
    refused = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-2")
    assert refused.status == 409 and "interrupted" in (refused.error or "")
    assert parts.engine.sent == []


async def test_a_send_that_sent_nothing_may_be_retried_with_its_key(parts: Any) -> None:
    iid = await parts.instance()
    bad = await parts.cmd(C.SEND_TEXT, iid, {**TEXT, "phone": "abc"}, idempotency_key="k-3")
    assert bad.status == 400 and bad.details and bad.details[0]["field"] == "phone"
    parts.engine.fail = EngineError("WhatsApp refused the message", status=502)
    refused = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-3")
    assert refused.status == 502 and refused.error == "WhatsApp refused the message"
    sent = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-3")
    assert sent.ok and len(parts.engine.sent) == 1


async def test_a_failure_after_the_engine_sent_leaves_the_key_pending(parts: Any) -> None:
    """A failure the engine does not own (its outcome unknown) is not retried as new."""
    iid = await parts.instance()
    parts.engine.fail = RuntimeError("connection dropped mid-send")
    failed = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-4")
    assert failed.status == 500
    assert (await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="k-4")).status == 409


async def test_a_sent_media_message_is_stored_with_its_file(parts: Any) -> None:
    iid = await parts.instance()
    upload = {"phone": "15550000002", "dataBase64": base64.b64encode(PNG).decode(), "filename": "x.png"}
    sent = await parts.cmd(C.SEND_MEDIA, iid, {**upload, "caption": "pic"})
    assert sent.ok and parts.engine.sent[-1][2] == "image/png"
    history = (await parts.q(Q.CHAT_MESSAGES, iid, {"chatId": "15550000002"})).data["messages"]
    assert history[0]["messageType"] == "image" and history[0]["content"] == "pic"
    assert history[0]["fileName"] == "x.png" and history[0]["caption"] == "pic" and history[0]["fromMe"]
    event = (await parts.bus.published("message_sent", iid))[0]
    assert event.meta == {"hasMedia": True, "mediaSize": len(PNG), "mimeType": "image/png"}
    both = await parts.cmd(C.SEND_MEDIA, iid, {**upload, "url": "https://example.com/x.png"})
    assert both.status == 400 and "exactly one" in (both.error or "")


# --- over the bus --------------------------------------------------------------------------------


async def test_messages_contacts_history_events(ctx: Any, media_server: str) -> None:
    a = await ctx.paired("15550000001")
    b = await ctx.paired("15550000002", BOB)
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


async def test_media_guard_refuses_private_addresses() -> None:
    with pytest.raises(RequestError) as refused:
        await download("http://127.0.0.1:9/x.png", max_bytes=10, timeout_s=2, allow_private=False)
    assert refused.value.status == 400 and "refused" in refused.value.message
    with pytest.raises(RequestError):
        await download(
            "http://169.254.169.254/latest/meta-data", max_bytes=10, timeout_s=2, allow_private=False
        )
    with pytest.raises(RequestError):
        await download("file:///etc/passwd", max_bytes=10, timeout_s=2, allow_private=False)


async def test_a_send_too_close_to_its_deadline_is_not_sent(parts: Any) -> None:
    """A send that waited in the queue until less than ``WORKER_SEND_MIN_REMAINING_S`` is left
    is answered 504 and not sent (its caller would give up before the reply; a 503 there must
    not hide a sent message), and its key is released for a retry."""
    iid = await parts.instance()
    before = len(parts.engine.sent)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    late = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="late-1", deadline=soon)
    assert late.status == 504 and "not sent" in (late.error or ""), late
    assert len(parts.engine.sent) == before
    again = await parts.cmd(C.SEND_TEXT, iid, TEXT, idempotency_key="late-1")
    assert again.ok and len(parts.engine.sent) == before + 1
