"""Contract: sending, contacts and chats on a linked instance (reference, "WhatsApp API",
"Contacts", "Chats and Messages"), in both path families."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import wait_for
from tests.contract.conftest import User
from tests.contract.helpers import create_instance, link, pagination, shape
from tests.support.http import HttpServer

pytestmark = pytest.mark.e2e

FAMILIES = ["instances", "whatsapp"]
CONTACT = "79001234567"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 64


@pytest.fixture(scope="module")
async def linked(api: httpx.AsyncClient, admin: User, alice: User) -> AsyncIterator[tuple[str, str]]:
    """Alice's instance, linked on the simulated network; yields (instance id, its phone)."""
    phone = "1555" + f"{secrets.randbelow(10**7):07d}"
    iid = await create_instance(api, alice.key, name="linked")
    await link(api, admin.key, alice.key, iid, phone)
    yield iid, phone
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


@pytest.fixture(scope="module")
async def media_url() -> AsyncIterator[str]:
    """The test HTTP server on loopback serving one PNG (the worker downloads send-media URLs)."""
    async with HttpServer() as server:
        yield server.serve("/image.png", PNG, "image/png")


@pytest.mark.parametrize("family", FAMILIES)
async def test_send_text(api: httpx.AsyncClient, alice: User, linked: tuple[str, str], family: str) -> None:
    iid, _ = linked
    response = await api.post(
        f"/api/{family}/{iid}/send", headers=alice.key, json={"phone": CONTACT, "message": "Hi! How are you?"}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"} and response.json()["id"]
    # "+", separators and JIDs are accepted too.
    for phone in ("+7 900 123-45-67", f"{CONTACT}@s.whatsapp.net"):
        response = await api.post(
            f"/api/{family}/{iid}/send", headers=alice.bearer, json={"phone": phone, "message": "again"}
        )
        assert response.status_code == 200, response.text


async def test_send_is_idempotent_with_key(
    api: httpx.AsyncClient, alice: User, linked: tuple[str, str]
) -> None:
    iid, _ = linked
    key = {"Idempotency-Key": "contract-" + secrets.token_hex(8), **alice.key}
    first = await api.post(
        f"/api/whatsapp/{iid}/send", headers=key, json={"phone": CONTACT, "message": "once"}
    )
    second = await api.post(
        f"/api/whatsapp/{iid}/send", headers=key, json={"phone": CONTACT, "message": "once"}
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]


async def test_bad_phone_is_400(api: httpx.AsyncClient, alice: User, linked: tuple[str, str]) -> None:
    iid, _ = linked
    response = await api.post(
        f"/api/whatsapp/{iid}/send", headers=alice.key, json={"phone": "12ab", "message": "x"}
    )
    assert response.status_code == 400
    body = response.json()
    assert "phone" in body["error"].lower() and body["details"][0]["field"] == "phone"
    response = await api.post(f"/api/whatsapp/{iid}/send", headers=alice.key, json={"phone": CONTACT})
    assert response.status_code == 400
    assert {"field": "message", "message": "Field required"} in response.json()["details"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_send_media_by_url(
    api: httpx.AsyncClient, alice: User, linked: tuple[str, str], media_url: str, family: str
) -> None:
    iid, _ = linked
    response = await api.post(
        f"/api/{family}/{iid}/send-media",
        headers=alice.key,
        json={"phone": CONTACT, "url": media_url, "caption": "Image description", "filename": "image.jpg"},
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}


@pytest.mark.parametrize("family", FAMILIES)
async def test_send_file(api: httpx.AsyncClient, alice: User, linked: tuple[str, str], family: str) -> None:
    iid, _ = linked
    response = await api.post(
        f"/api/{family}/{iid}/send-file",
        headers=alice.key,
        data={"phone": CONTACT, "caption": "a file"},
        files={"file": ("pixel.png", PNG, "image/png")},
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}


async def test_send_file_too_large_is_413(
    api: httpx.AsyncClient, alice: User, linked: tuple[str, str]
) -> None:
    iid, _ = linked
    big = b"\0" * (1024 * 1024 + 1)  # GATEWAY_MAX_UPLOAD_BYTES is 1 MiB in this suite
    response = await api.post(
        f"/api/whatsapp/{iid}/send-file",
        headers=alice.key,
        data={"phone": CONTACT},
        files={"file": ("big.bin", big, "application/octet-stream")},
    )
    assert response.status_code == 413
    assert "1048576" in response.json()["error"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_contacts(api: httpx.AsyncClient, alice: User, linked: tuple[str, str], family: str) -> None:
    iid, _ = linked
    response = await api.get(f"/api/{family}/{iid}/contacts", headers=alice.key)
    assert response.status_code == 200, response.text
    for contact in response.json()["contacts"]:
        shape(contact, {"id", "name", "number", "isGroup"})

    response = await api.post(
        f"/api/{family}/{iid}/contacts/add", headers=alice.bearer, json={"phone": CONTACT, "name": "John Doe"}
    )
    assert response.status_code == 200, response.text
    added = shape(response.json(), {"success", "message", "contact"})
    assert shape(added["contact"], {"id", "number", "name"})["id"] == f"{CONTACT}@s.whatsapp.net"

    response = await api.post(f"/api/{family}/{iid}/contacts/import", headers=alice.key)
    assert response.status_code == 200, response.text
    imported = shape(response.json(), {"success", "message", "importedCount"})
    assert isinstance(imported["importedCount"], int)

    save = {
        "number": "79001230000",
        "name": "Jane Roe",
        "pushName": "Jane",
        "isGroup": False,
        "profilePicture": "url-to-picture",
        "about": "User status",
    }
    response = await api.post(f"/api/{family}/{iid}/contacts/save", headers=alice.key, json=save)
    assert response.status_code == 200, response.text
    saved = shape(
        response.json(),
        {
            "id",
            "instanceId",
            "name",
            "number",
            "remoteJid",
            "pushName",
            "isGroup",
            "profilePicture",
            "about",
            "lastActivity",
            "createdAt",
            "updatedAt",
        },
    )
    assert saved["remoteJid"] == "79001230000@s.whatsapp.net" and saved["about"] == "User status"

    response = await api.get(
        f"/api/{family}/{iid}/contacts/db",
        headers=alice.key,
        params={"limit": 5, "skip": 0, "search": "Jane", "onlyGroups": "false"},
    )
    assert response.status_code == 200, response.text
    page = shape(response.json(), {"contacts", "pagination"})
    pagination(page, 5)
    assert any(c["number"] == "79001230000" for c in page["contacts"])


async def test_chat_history_and_incoming(
    api: httpx.AsyncClient, admin: User, alice: User, linked: tuple[str, str]
) -> None:
    iid, phone = linked
    sent = await api.post(
        f"/api/instances/{iid}/send", headers=alice.key, json={"phone": CONTACT, "message": "hist"}
    )
    assert sent.status_code == 200
    message_id = sent.json()["id"]

    async def stored() -> dict[str, Any] | None:
        response = await api.get(
            f"/api/instances/{iid}/chats/{CONTACT}@s.whatsapp.net/messages",
            headers=alice.key,
            params={"limit": 50},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return body if any(m["messageId"] == message_id for m in body["messages"]) else None

    body = await wait_for(stored, timeout_s=15, message="sent message in chat history")
    pagination(body, 50)
    for message in body["messages"]:
        shape(
            message,
            {
                "id",
                "instanceId",
                "remoteJid",
                "fromMe",
                "messageType",
                "content",
                "messageId",
                "hasMedia",
                "status",
                "createdAt",
                "updatedAt",
            },
        )

    # A simulated contact writes to the instance: it shows up in the latest events.
    response = await api.post(
        "/api/admin/sim/messages",
        headers=admin.key,
        json={"from": CONTACT, "to": phone, "message": "Hello from the simulator"},
    )
    assert response.status_code == 200, response.text

    async def received() -> bool:
        response = await api.get(
            f"/api/instances/{iid}/events",
            headers=alice.key,
            params={"types": "message_received", "limit": 20},
        )
        return any(e["data"].get("body") == "Hello from the simulator" for e in response.json()["events"])

    await wait_for(received, timeout_s=15, message="message_received event")
