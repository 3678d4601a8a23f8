"""The events feed, logout, contacts and linking as a client of the REST contract sees them, on the
whole system as processes (two session workers, simulator engine).

The acceptance test polls ``GET /api/instances/{id}/events`` the way the reference's usage
examples do: ``since`` = the last ``latestTimestamp``, printing ``data.from`` and ``data.body`` of
each ``message_received``, while simulated contacts write in and the instance answers (its sends
and their receipts interleave with the inbound messages). Every sender must be printed exactly
once per message.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from conftest import wait_for
from tests.e2e import steps
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


async def _user_key(api: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    """A new user's API key header (the reference's examples authenticate with ``x-api-key``)."""
    email, password = await steps.create_user(api, admin)
    key = (await steps.login(api, email, password))["user"]["apiKey"]
    return {"x-api-key": key}


async def _linked(system: System, headers: dict[str, str], name: str) -> tuple[str, str]:
    """A new instance linked by a simulated phone (push name "E2E Phone"); (id, phone)."""
    created = await steps.create_instance(system.api, headers, name, None, None)
    phone = steps.new_phone()
    await steps.link(system.api, system.admin, headers, created["id"], phone)
    return str(created["id"]), phone


class ReferenceClient:
    """Polls the events feed as the reference's usage examples do and keeps what they print."""

    def __init__(self, api: httpx.AsyncClient, headers: dict[str, str], iid: str) -> None:
        self.api, self.headers, self.iid = api, headers, iid
        self.since: str | None = None
        self.printed: list[tuple[str, str]] = []  # (data.from, data.body)
        self.last: dict[str, Any] = {}

    async def poll(self) -> dict[str, Any]:
        params = {"since": self.since} if self.since else {}
        url = f"/api/instances/{self.iid}/events"
        response = await self.api.get(url, headers=self.headers, params=params)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        for event in data["events"]:
            if event["type"] == "message_received":
                message = event["data"]
                self.printed.append((message["from"], message["body"]))  # KeyError if absent
        self.since = data["latestTimestamp"]
        self.last = data
        return data


async def test_a_client_polling_like_the_reference_prints_every_sender_once(system: System) -> None:
    api, admin = system.api, system.admin
    headers = await _user_key(api, admin)
    iid, phone = await _linked(system, headers, "events feed")
    client = ReferenceClient(api, headers, iid)
    await client.poll()  # the client runs before the messages come

    contacts = [steps.new_phone(), steps.new_phone(), steps.new_phone()]
    expected: list[tuple[str, str]] = []
    running = True

    async def keep_polling() -> None:
        while running:
            await client.poll()

    async def contact_writes(contact: str) -> None:
        for i in range(8):
            body = f"message {i} from {contact}"
            response = await api.post(
                "/api/admin/sim/messages",
                headers=admin,
                json={"from": contact, "to": phone, "message": body, "pushName": "Writer"},
            )
            assert response.status_code == 200, response.text
            expected.append((steps.jid(contact), body))

    async def instance_answers() -> None:
        for i in range(6):
            await steps.send_text(api, headers, iid, contacts[i % len(contacts)], f"answer {i}")

    poller = asyncio.create_task(keep_polling())
    try:
        await asyncio.gather(*(contact_writes(c) for c in contacts), instance_answers())
    finally:
        running = False
        await poller

    async def printed_all() -> bool:
        await client.poll()
        return len(client.printed) >= len(expected)

    await wait_for(printed_all, timeout_s=30, interval_s=0.2, message="every received message printed")

    # Receipts may still come in: poll until the feed has nothing new, then compare.
    async def quiet() -> bool:
        return (await client.poll())["count"] == 0

    await wait_for(quiet, timeout_s=30, interval_s=0.3, message="the feed drained")
    assert Counter(client.printed) == Counter(expected), (
        f"printed twice: {[p for p, n in Counter(client.printed).items() if n > 1]}; "
        f"never printed: {sorted(set(expected) - set(client.printed))}"
    )

    # Sent messages carry their recipient as "to"; remoteJid and fromMe stay.
    response = await api.get(
        f"/api/instances/{iid}/events", headers=headers, params={"types": "message_sent", "limit": 100}
    )
    sent = [e["data"] for e in response.json()["events"]]
    assert len(sent) == 6
    assert all(d["to"] == d["remoteJid"] and d["fromMe"] is True for d in sent), sent
    assert {d["to"] for d in sent} == {steps.jid(c) for c in contacts}
    received = [
        e["data"]
        for e in (
            await api.get(
                f"/api/instances/{iid}/events",
                headers=headers,
                params={"types": "message_received", "limit": 100},
            )
        ).json()["events"]
    ]
    assert all(d["from"] == d["remoteJid"] and d["fromMe"] is False for d in received)
    await api.delete(f"/api/instances/{iid}", headers=headers)


async def test_logout_qr_contacts_and_the_linked_account(system: System) -> None:
    api, admin = system.api, system.admin
    headers = await _user_key(api, admin)
    created = await steps.create_instance(api, headers, "linking", None, None)
    iid = str(created["id"])

    # 200 {qrCode, expiresAt}: the code and when it stops working (ISO 8601 UTC).
    await steps.wait_qr(api, headers, iid)
    shown = (await api.get(f"/api/instances/{iid}/qr", headers=headers)).json()
    assert set(shown) == {"qrCode", "expiresAt"}, shown
    expires = datetime.fromisoformat(shown["expiresAt"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC)

    phone = steps.new_phone()
    await steps.scan(api, admin, iid, phone)
    await steps.wait_status(api, headers, iid, "connected")
    detail = (await api.get(f"/api/instances/{iid}", headers=headers)).json()
    assert detail["connectionStatus"] == {
        "ready": True,
        "status": "connected",
        "hasQr": False,
        "phone": phone,
        "pushName": "E2E Phone",
    }
    status = (await api.get(f"/api/instances/{iid}/status", headers=headers)).json()
    assert status["connectionDetails"]["phone"] == phone
    assert status["connectionDetails"]["pushName"] == "E2E Phone"

    # A contact added to WhatsApp shows by its name in the live session's contacts.
    carol = steps.new_phone()
    added = await api.post(
        f"/api/instances/{iid}/contacts/add", headers=headers, json={"phone": carol, "name": "Carol"}
    )
    assert added.status_code == 200, added.text
    contacts = (await api.get(f"/api/instances/{iid}/contacts", headers=headers)).json()["contacts"]
    assert {"id": steps.jid(carol), "name": "Carol", "number": carol, "isGroup": False} in contacts

    # Logout: one disconnected with reason "logout"; a second logout answers the same, adds nothing.
    first = await api.post(f"/api/instances/{iid}/logout", headers=headers)
    assert first.status_code == 200, first.text
    second = await api.post(f"/api/instances/{iid}/logout", headers=headers)
    assert second.status_code == 200 and second.json() == first.json(), second.text
    feed = await api.get(
        f"/api/instances/{iid}/events", headers=headers, params={"types": "disconnected", "limit": 100}
    )
    assert [e["data"] for e in feed.json()["events"]] == [
        {"instanceId": iid, "reason": "logout", "willReconnect": False}
    ]
    after = (await api.get(f"/api/instances/{iid}", headers=headers)).json()["connectionStatus"]
    assert after["phone"] is None and after["pushName"] is None

    # The QR endpoint stays 202 but says the instance is logged out: a polling client can stop.
    qr = await api.get(f"/api/instances/{iid}/qr", headers=headers)
    assert qr.status_code == 202 and qr.json()["status"] == "logged_out", qr.text
    assert "reconnect" in qr.json()["message"]
    assert (await api.post(f"/api/instances/{iid}/reconnect", headers=headers)).status_code == 200
    await steps.wait_qr(api, headers, iid)
    await api.delete(f"/api/instances/{iid}", headers=headers)
