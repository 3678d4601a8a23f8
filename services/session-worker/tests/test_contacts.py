"""Contacts: the live session's list, adding (into the account's book too), importing, saving.

Fast tests run the service's parts on the in-memory store with a scripted engine (``parts``);
the other the worker in process over the real RabbitMQ with the simulator (``ctx``)."""

from __future__ import annotations

from typing import Any

from conftest import wait_for
from wa_common.schemas import Caller
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_common.sim_client import sim_send
from wa_session_worker.engines.base import WaContact

ALICE = Caller(user_id="alice")


# --- the service's parts -------------------------------------------------------------------------


async def test_imported_contacts_are_stored_within_their_columns(parts: Any) -> None:
    iid = await parts.instance()
    parts.engine.contacts = [
        WaContact("15550000002@s.whatsapp.net", name="Bob\x00", push_name="b" * 300),
        WaContact("120363025246125486@g.us", name="Team", is_group=True),
    ]
    live = (await parts.cmd(C.FETCH_CONTACTS, iid)).data["contacts"]
    assert [c["number"] for c in live] == ["15550000002", "120363025246125486"]
    imported = await parts.cmd(C.IMPORT_CONTACTS, iid)
    assert imported.data == {
        "success": True,
        "message": "Successfully imported 2 contacts",
        "importedCount": 2,
    }
    stored = (await parts.q(Q.CONTACTS_DB, iid)).data["contacts"]
    bob = next(c for c in stored if c["number"] == "15550000002")
    assert bob["name"] == "Bob\ufffd" and len(bob["pushName"]) == 256
    assert [
        c["isGroup"] for c in (await parts.q(Q.CONTACTS_DB, iid, {"onlyGroups": True})).data["contacts"]
    ] == [True]
    logs = (await parts.q(Q.ACTIVITY, iid, {"actions": ["contacts_imported"]})).data["logs"]
    assert logs[0]["details"] == {"count": 2}


async def test_a_contact_is_added_and_saved(parts: Any) -> None:
    iid = await parts.instance()
    added = await parts.cmd(C.ADD_CONTACT, iid, {"phone": "+1 555 000 0003", "name": "Carol"})
    assert added.data["contact"] == {
        "id": "15550000003@s.whatsapp.net",
        "number": "15550000003",
        "name": "Carol",
    }
    group = await parts.cmd(C.SAVE_CONTACT, iid, {"number": "120363025246125486", "isGroup": True})
    assert group.data["remoteJid"] == "120363025246125486@g.us"
    assert (await parts.cmd(C.ADD_CONTACT, iid, {"phone": "120363025246125486@g.us"})).status == 400


# --- over the bus --------------------------------------------------------------------------------


async def test_an_added_contact_shows_by_its_name_in_the_live_contacts(ctx: Any) -> None:
    a = await ctx.paired("15550000013")

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
