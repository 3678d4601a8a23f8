"""Engine events → the store → events: messages (received, and sent ones echoed by the engine),
receipts, the session's state, and the events feed's clock.

Fast tests run the service's parts on the in-memory store with a scripted engine (``parts``);
the events-feed test runs the worker in process over the real RabbitMQ (``ctx``)."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import wait_for
from wa_common.ids import new_id
from wa_common.schemas import Caller
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker.engines.base import Disconnected, LoggedOut, Message, QrCode, Receipt

ALICE = Caller(user_id="alice")
CONTACT = "15550000002@s.whatsapp.net"


def inbound(iid: str, message_id: str, **kw: Any) -> Message:
    values: dict[str, Any] = dict(
        instance_id=iid,
        message_id=message_id,
        chat_jid=CONTACT,
        sender_jid=CONTACT,
        from_me=False,
        timestamp=1_767_225_600,
        type="conversation",
        text="hello",
        push_name="Bob",
    )
    values.update(kw)
    return Message(**values)


async def statuses(parts: Any, iid: str) -> dict[str, str]:
    history = (await parts.q(Q.CHAT_MESSAGES, iid, {"chatId": CONTACT})).data["messages"]
    return {m["messageId"]: m["status"] for m in history}


# --- the service's parts -------------------------------------------------------------------------


async def test_a_sent_message_echoed_by_the_engine_is_stored_once(parts: Any) -> None:
    """Sends and the engine's messages share one path: the echo of our own send (``from_me``)
    finds it stored and reports nothing again; a redelivered inbound message likewise."""
    iid = await parts.instance()
    sent = await parts.cmd(C.SEND_TEXT, iid, {"phone": "15550000002", "message": "hi"})
    echo = inbound(iid, sent.data["id"], from_me=True, text="hi", sender_jid="15550000000@s.whatsapp.net")
    await parts.worker.recorder.on_engine_event(echo)
    [event] = await parts.bus.published("message_sent", iid)
    assert event.data == {
        "instanceId": iid,
        "messageId": sent.data["id"],
        "to": CONTACT,
        "body": "hi",
        "type": "text",
        "timestamp": 1_767_225_601,
        "hasMedia": False,
    }
    for _ in range(2):
        await parts.worker.recorder.on_engine_event(inbound(iid, "IN-1"))
    [received] = parts.bus.of("message_received", iid)
    assert received.data["from"] == CONTACT and received.data["pushName"] == "Bob"
    assert await statuses(parts, iid) == {sent.data["id"]: "sent", "IN-1": "received"}
    feed = (await parts.q(Q.EVENTS, iid, {"types": ["message_sent", "message_received"]})).data
    assert [e["data"].get("to") or e["data"]["from"] for e in feed["events"]] == [CONTACT, CONTACT]


async def test_a_group_message_is_from_its_sender(parts: Any) -> None:
    iid = await parts.instance()
    group = "120363025246125486@g.us"
    message = inbound(iid, "IN-G", chat_jid=group, is_group=True, text="a\x00b")
    await parts.worker.recorder.on_engine_event(message)
    [event] = parts.bus.of("message_received", iid)
    assert event.data["from"] == CONTACT and event.data["body"] == "a\ufffdb"
    kept = (await parts.q(Q.EVENTS, iid, {"types": ["message_received"]})).data["events"][0]["data"]
    assert kept["from"] == CONTACT and kept["remoteJid"] == group


async def test_receipts_only_move_a_status_forward(parts: Any) -> None:
    iid = await parts.instance()
    sent = (await parts.cmd(C.SEND_TEXT, iid, {"phone": "15550000002", "message": "hi"})).data["id"]
    recorder = parts.worker.recorder
    for status in ("read", "delivered", "sent", "failed", "seen-by-martians"):
        await recorder.on_engine_event(Receipt(iid, CONTACT, (sent,), status, 1_767_225_700))
    assert await statuses(parts, iid) == {sent: "read"}
    assert [e.data["status"] for e in parts.bus.of("message_status", iid)] == ["read"]
    await recorder.on_engine_event(Receipt(iid, CONTACT, (sent,), "played", 1_767_225_800))
    assert await statuses(parts, iid) == {sent: "played"}


async def test_the_feed_clock_gives_each_event_its_own_millisecond(parts: Any) -> None:
    """The clock stands still: kept events still get increasing, distinct millisecond times."""
    iid = await parts.instance()
    await asyncio.gather(*(parts.worker.recorder.on_engine_event(inbound(iid, f"IN-{n}")) for n in range(5)))
    stamps = [e["timestamp"] for e in (await parts.q(Q.EVENTS, iid, {"limit": 100})).data["events"]]
    assert stamps == sorted(set(stamps), reverse=True) and len(stamps) == 6  # and "connected"
    assert stamps[-1] == "2026-01-01T00:00:00.000Z" and stamps[0] == "2026-01-01T00:00:00.005Z"


async def test_events_of_a_session_not_running_here_are_not_reported(parts: Any) -> None:
    """A session stopped on purpose (its shard moved, shutdown) reports no QR or disconnect."""
    iid = await parts.instance()
    await parts.worker.sessions.stop(iid)
    recorder = parts.worker.recorder
    await recorder.on_engine_event(QrCode(iid, "2@code", 1, 60.0))
    await recorder.on_engine_event(Disconnected(iid, "stream closed", will_reconnect=True))
    await recorder.on_engine_event(LoggedOut(iid, "unlinked"))
    assert not parts.bus.of("qr_received", iid) and not parts.bus.of("disconnected", iid)
    assert (await parts.q(Q.STATUS, iid)).data["status"] == "connected"
    await recorder.on_engine_event(inbound(new_id(), "IN-unknown"))  # no such instance: ignored


async def test_a_qr_code_is_stored_with_its_expiry(parts: Any) -> None:
    iid = await parts.instance()
    await parts.worker.recorder.on_engine_event(QrCode(iid, "2@code", 2, 20.5))
    shown = (await parts.q(Q.QR, iid)).data
    assert shown == {"qrCode": "2@code", "expiresAt": "2026-01-01T00:00:20.500Z"}
    [event] = parts.bus.of("qr_received", iid)
    assert event.meta == {"expiresAt": "2026-01-01T00:00:20.500Z"} and event.data["qrCode"] == "2@code"


# --- over the bus --------------------------------------------------------------------------------


async def test_events_feed_polled_with_latest_timestamp_shows_every_sender_once(ctx: Any) -> None:
    """A client polls ``events`` as the reference's usage examples do: ``since`` = the last
    ``latestTimestamp``, reading ``data.from`` and ``data.body`` of each ``message_received``.
    Bursts of messages arrive while it polls, larger than its page (``limit``), from engine
    callbacks running concurrently (as the engines call them: one task per account or chat):
    it sees every message exactly once, with its sender; sent messages carry ``to``."""
    a = await ctx.paired("15550000011")
    contacts = ["15550008001@s.whatsapp.net", "15550008002@s.whatsapp.net"]
    expected: dict[str, tuple[str, str]] = {}  # message id -> (from, body)
    seen: list[tuple[str, str, str]] = []  # (message id, from, body) as the client printed them
    since: str | None = None
    injecting = True

    async def poll_once() -> dict[str, Any]:
        nonlocal since
        body = await ctx.feed(a, since=since, limit=5)
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
            await asyncio.gather(*(ctx.worker.recorder.on_engine_event(m) for m in burst))
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

    everything = await ctx.feed(a, limit=1000)
    stamps = [e["timestamp"] for e in everything["events"]]
    assert len(stamps) == len(set(stamps)), "two events of one instance share a timestamp"
    assert stamps == sorted(stamps, reverse=True)
    answer = next(e for e in everything["events"] if e["type"] == "message_sent")["data"]
    assert answer["to"] == "15550008001@s.whatsapp.net" and answer["remoteJid"] == answer["to"]
    assert answer["fromMe"] is True and answer["body"] == "answer"
    received = next(e for e in everything["events"] if e["type"] == "message_received")["data"]
    assert received["from"] == received["remoteJid"] and received["fromMe"] is False
