"""Read queries answered from the store: instances, the QR answer, the events feed, pages.

The service's parts on the in-memory store with a scripted engine (``parts``); the same queries
over the bus are exercised by ``test_instances.py``, ``test_messaging.py`` and
``test_recorder.py``."""

from __future__ import annotations

from typing import Any

from wa_common.schemas import Caller, Query
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker.engines.base import Message, QrCode, SessionStatus

ADMIN = Caller(user_id="root", role="admin")
BOB = Caller(user_id="bob")


async def test_the_qr_answer_follows_the_instance(parts: Any) -> None:
    parts.engine.start_status = SessionStatus.QR
    iid = "01QRFLOW"
    assert (await parts.cmd(C.CREATE_INSTANCE, iid, {"name": "qr"})).status == 201
    waiting = await parts.q(Q.QR, iid)
    assert waiting.status == 202 and waiting.data["status"] == "generating"
    await parts.worker.recorder.on_engine_event(QrCode(iid, "2@code", 1, 60.0))
    assert (await parts.q(Q.QR, iid)).data["qrCode"] == "2@code"
    assert (await parts.cmd(C.LOGOUT, iid)).ok
    out = await parts.q(Q.QR, iid)
    assert out.status == 202 and out.data["status"] == "logged_out" and "reconnect" in out.data["message"]
    iid2 = await parts.instance()
    assert (await parts.q(Q.QR, iid2)).status == 409


async def test_instances_are_listed_per_user_and_for_admins_all(parts: Any) -> None:
    mine = await parts.instance()
    theirs = await parts.instance(BOB)
    listed = {i["id"] for i in (await parts.q(Q.LIST_INSTANCES, None)).data["instances"]}
    assert listed == {mine}
    everyone = await parts.q(Q.LIST_INSTANCES, None, {"allUsers": True}, ADMIN)
    assert {i["id"] for i in everyone.data["instances"]} == {mine, theirs}
    assert (await parts.q(Q.LIST_INSTANCES, None, {"allUsers": True})).data["instances"][0]["id"] == mine
    anonymous = await parts.worker.query_router.dispatch(Query(name=Q.LIST_INSTANCES))
    assert anonymous is not None and anonymous.status == 401


async def test_the_feed_since_a_time_starts_after_its_millisecond(parts: Any) -> None:
    iid = await parts.instance()
    first = (await parts.q(Q.EVENTS, iid)).data
    assert first["count"] == 1 and first["events"][0]["type"] == "connected"
    since = first["latestTimestamp"]
    nothing = (await parts.q(Q.EVENTS, iid, {"since": since})).data
    assert nothing == {"events": [], "latestTimestamp": since, "count": 0, "hasMore": False}
    message = Message(
        iid, "IN-1", "15550000002@s.whatsapp.net", "15550000002@s.whatsapp.net", False, 1, "conversation"
    )
    await parts.worker.recorder.on_engine_event(message)
    later = (await parts.q(Q.EVENTS, iid, {"since": since, "types": ["message_received,connected"]})).data
    assert [e["type"] for e in later["events"]] == ["message_received"] and later["latestTimestamp"] > since
    assert (await parts.q(Q.EVENTS, iid, {"since": "yesterday"})).status == 400


async def test_pages_and_ids(parts: Any) -> None:
    iid = await parts.instance()
    for n in range(3):
        await parts.cmd(C.SAVE_CONTACT, iid, {"number": f"1555000001{n}", "name": f"C{n}"})
    page = (await parts.q(Q.CONTACTS_DB, iid, {"limit": 2, "skip": 1})).data
    assert page["pagination"] == {"total": 3, "limit": 2, "skip": 1, "hasMore": False}
    assert [c["name"] for c in page["contacts"]] == ["C1", "C2"]
    assert (await parts.q(Q.CHAT_MESSAGES, iid, {"chatId": "not a chat"})).status == 400
    assert (await parts.q(Q.GET_INSTANCE, iid, caller=BOB)).status == 404
    assert (await parts.q(Q.GET_INSTANCE, None)).status == 400
