"""Instances: create, update, delete, reconnect, log out, the QR flow and the linked account.

Fast tests run the service's parts on the in-memory store with a scripted engine (``parts``);
the others the worker in process over the real RabbitMQ with the simulator (``ctx``), checking
replies against the API reference's response bodies."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from conftest import wait_for
from wa_common.ids import new_id
from wa_common.schemas import Caller
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_common.sim_client import sim_scan

ALICE = Caller(user_id="alice")
BOB = Caller(user_id="bob")


# --- the service's parts -------------------------------------------------------------------------


async def test_times_come_from_the_injected_clock(parts: Any) -> None:
    parts.clock.advance(3600.25)
    iid = await parts.instance()
    created = (await parts.q(Q.GET_INSTANCE, iid)).data
    assert created["createdAt"] == "2026-01-01T01:00:00.250Z"
    parts.clock.advance(1)
    updated = await parts.cmd(C.UPDATE_INSTANCE, iid, {"name": "later"})
    assert updated.data["updatedAt"] == "2026-01-01T01:00:01.250Z"


async def test_webhook_updated_is_reported_only_when_the_webhook_changes(parts: Any) -> None:
    iid = await parts.instance()
    assert (await parts.cmd(C.UPDATE_INSTANCE, iid, {"name": "renamed"})).ok
    assert len(parts.bus.of("instance.updated", iid)) == 1 and not parts.bus.of("webhook_updated", iid)
    assert (await parts.cmd(C.UPDATE_INSTANCE, iid, {"webhookUrl": "https://example.com/h"})).ok
    assert len(parts.bus.of("webhook_updated", iid)) == 1
    assert parts.bus.of("instance.updated", iid)[-1].data["webhookUrl"] == "https://example.com/h"


async def test_delete_stops_the_session_and_forgets_the_instance(parts: Any) -> None:
    iid = await parts.instance()
    assert iid in parts.worker.sessions.running and parts.engine.status(iid) == "connected"
    deleted = await parts.cmd(C.DELETE_INSTANCE, iid)
    assert deleted.data == {"success": True, "message": f"Instance {iid} deleted successfully"}
    assert iid not in parts.worker.sessions.running and parts.engine.status(iid) == "disconnected"
    assert await parts.worker.recorder.user_of(iid) is None
    assert parts.bus.of("instance.deleted", iid)[0].data == {"instanceId": iid, "userId": "alice"}
    assert (await parts.cmd(C.DELETE_INSTANCE, iid)).status == 404


async def test_another_users_instance_is_not_found(parts: Any) -> None:
    iid = await parts.instance()
    for name in (C.RECONNECT, C.LOGOUT, C.DELETE_INSTANCE):
        assert (await parts.cmd(name, iid, caller=BOB)).status == 404
    assert (await parts.cmd(C.CREATE_INSTANCE, iid, {"name": "mine"}, BOB)).status == 409
    assert (await parts.q(Q.STATUS, iid, caller=Caller(user_id="root", role="admin"))).ok


# --- over the bus --------------------------------------------------------------------------------


async def test_instance_lifecycle(ctx: Any) -> None:
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


async def test_logout_is_reported_once_with_reason_logout(ctx: Any) -> None:
    iid = await ctx.paired("15550000012")
    out = await ctx.cmd(C.LOGOUT, iid)
    assert out.status == 200 and out.data == {"success": True, "message": f"Instance {iid} logged out"}

    async def disconnected() -> list[dict[str, Any]]:
        return [e["data"] for e in (await ctx.feed(iid, types=["disconnected"], limit=100))["events"]]

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


async def test_qr_expiry_and_the_linked_account_in_the_connection_status(ctx: Any) -> None:
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
