"""Contract: instance management (reference, "Instance Management"), with both auth schemes."""

from __future__ import annotations

import httpx
import pytest

from tests.contract.conftest import User
from tests.contract.helpers import (
    INSTANCE_KEYS,
    REFERENCE_CREATE_BODY,
    create_instance,
    pagination,
    shape,
    wait_qr,
)

pytestmark = pytest.mark.e2e

SCHEMES = ["bearer", "key"]


def auth(user: User, scheme: str) -> dict[str, str]:
    return user.bearer if scheme == "bearer" else user.key


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_instance_lifecycle(api: httpx.AsyncClient, alice: User, scheme: str) -> None:
    h = auth(alice, scheme)
    # Create: 201 with the instance body.
    response = await api.post("/api/instances", headers=h, json=REFERENCE_CREATE_BODY)
    assert response.status_code == 201, response.text
    created = shape(response.json(), INSTANCE_KEYS)
    iid = created["id"]
    assert created["name"] == "Primary WhatsApp" and created["userId"] == alice.id
    assert created["webhookUrl"] == "https://example.com/webhook" and created["webhookEnabled"] is True

    # List.
    response = await api.get("/api/instances", headers=h)
    assert response.status_code == 200
    listed = [i for i in response.json()["instances"] if i["id"] == iid]
    assert len(listed) == 1
    shape(listed[0], {"id", "name", "status", "createdAt", "updatedAt", "connectionStatus"})
    shape(listed[0]["connectionStatus"], {"ready", "status", "hasQr"})

    # Get, with webhookSettings and connectionStatus.
    response = await api.get(f"/api/instances/{iid}", headers=h)
    assert response.status_code == 200
    detail = shape(response.json(), {"id", "name", "status", "webhookSettings", "connectionStatus"})
    settings = shape(
        detail["webhookSettings"],
        {
            "notifyReceived",
            "notifySent",
            "notifyDelivery",
            "notifyRead",
            "maxRetries",
            "retryInterval",
            "secret",
            "headers",
        },
    )
    assert settings["retryInterval"] == 60000 and settings["headers"] == {"Custom-Header": "custom-value"}

    # Status.
    response = await api.get(f"/api/instances/{iid}/status", headers=h)
    assert response.status_code == 200
    status = shape(
        response.json(), {"instanceId", "status", "ready", "hasQr", "lastActivity", "connectionDetails"}
    )
    assert status["instanceId"] == iid

    # Update, with nested webhookSettings.
    update = {
        "name": "New WhatsApp Name",
        "description": "Updated description",
        "webhookUrl": "https://new-example.com/webhook",
        "webhookEnabled": True,
        "webhookSettings": {
            "notifyReceived": True,
            "notifySent": False,
            "notifyDelivery": True,
            "notifyRead": True,
            "maxRetries": 5,
            "retryInterval": 30000,
            "secret": "new-secret-key",
            "headers": {"New-Custom-Header": "new-value"},
        },
    }
    response = await api.put(f"/api/instances/{iid}", headers=h, json=update)
    assert response.status_code == 200, response.text
    updated = shape(
        response.json(), {"id", "name", "description", "webhookUrl", "webhookEnabled", "updatedAt"}
    )
    assert updated["name"] == "New WhatsApp Name"
    detail = (await api.get(f"/api/instances/{iid}", headers=h)).json()
    assert detail["webhookSettings"]["maxRetries"] == 5 and detail["webhookSettings"]["notifySent"] is False

    # QR: 202 while generating, then 200 {qrCode}; PNG and SVG renderings.
    code = await wait_qr(api, h, iid)
    assert code.count(",") >= 3  # ref,noiseKey,identityKey,advSecret
    response = await api.get(f"/api/instances/{iid}/qr", headers=h, params={"format": "png"})
    if response.status_code == 200:
        assert (
            response.headers["content-type"] == "image/png" and response.content[:8] == b"\x89PNG\r\n\x1a\n"
        )
    response = await api.get(f"/api/whatsapp/{iid}/qr", headers=h, params={"format": "svg"})
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("image/svg+xml") and b"<svg" in response.content

    # Activity log and latest events.
    response = await api.get(
        f"/api/instances/{iid}/activity",
        headers=h,
        params={"limit": 10, "actions": "connected,disconnected,qr_received,connection_opened"},
    )
    assert response.status_code == 200, response.text
    activity = shape(response.json(), {"logs", "pagination"})
    pagination(activity, 10)
    for log in activity["logs"]:
        shape(log, {"id", "instanceId", "action", "details", "createdAt"})
    response = await api.get(
        f"/api/instances/{iid}/events",
        headers=h,
        params={"limit": 5, "types": "qr_received,connection_closed", "since": "2020-01-01T00:00:00.000Z"},
    )
    assert response.status_code == 200, response.text
    events = shape(response.json(), {"events", "latestTimestamp", "count", "hasMore"})
    assert events["count"] == len(events["events"])

    # Reconnect, logout, delete.
    response = await api.post(f"/api/instances/{iid}/reconnect", headers=h)
    assert response.status_code == 200, response.text
    assert shape(response.json(), {"success", "message"})["success"] is True
    response = await api.post(f"/api/instances/{iid}/logout", headers=h)
    assert response.status_code == 200, response.text
    assert shape(response.json(), {"success"})["success"] is True
    response = await api.delete(f"/api/instances/{iid}", headers=h)
    assert response.status_code == 200
    assert shape(response.json(), {"success", "message"})["success"] is True
    response = await api.get(f"/api/instances/{iid}", headers=h)
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize("family", ["instances", "whatsapp"])
async def test_pairing_code(api: httpx.AsyncClient, alice: User, family: str) -> None:
    iid = await create_instance(api, alice.key)
    response = await api.post(
        f"/api/{family}/{iid}/pairing-code", headers=alice.key, json={"phone": "+1 555 000 1234"}
    )
    assert response.status_code == 200, response.text
    code = shape(response.json(), {"pairingCode"})["pairingCode"]
    assert len(code.replace("-", "")) == 8
    response = await api.post(f"/api/{family}/{iid}/pairing-code", headers=alice.key, json={"phone": "12"})
    assert response.status_code == 400 and "phone" in response.json()["error"].lower()
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def test_whatsapp_family_status_and_logout(api: httpx.AsyncClient, alice: User) -> None:
    iid = await create_instance(api, alice.key)
    response = await api.get(f"/api/whatsapp/{iid}/status", headers=alice.key)
    assert response.status_code == 200
    assert set(response.json()) == {"ready", "status", "hasQr"}
    code = await wait_qr(api, alice.key, iid)
    response = await api.get(f"/api/whatsapp/{iid}/qr", headers=alice.key)
    assert response.status_code in (200, 202)
    if response.status_code == 200:
        assert isinstance(response.json()["qrCode"], str) and code
    response = await api.post(f"/api/whatsapp/{iid}/logout", headers=alice.key)
    assert response.status_code == 200 and response.json()["success"] is True
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def test_qr_generating_is_202(api: httpx.AsyncClient, alice: User) -> None:
    iid = await create_instance(api, alice.key)
    response = await api.get(f"/api/instances/{iid}/qr", headers=alice.key)
    assert response.status_code in (200, 202), response.text
    if response.status_code == 202:
        assert response.json() == {
            "message": "QR code generation in progress. Please try again in a few seconds.",
            "status": "generating",
        }
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def test_a_retried_create_with_the_same_idempotency_key_makes_one_instance(
    api: httpx.AsyncClient, bob: User
) -> None:
    """The gateway forwarded ``Idempotency-Key`` but minted a new id per request, so a retried
    create made a second instance. The same key (same caller) answers the first instance again;
    another key, or another caller with the same key, makes a new one."""
    key = {"Idempotency-Key": "create-once-7f3a"}
    before = {i["id"] for i in (await api.get("/api/instances", headers=bob.key)).json()["instances"]}
    first = await api.post("/api/instances", headers={**bob.key, **key}, json={"name": "Once"})
    again = await api.post("/api/instances", headers={**bob.key, **key}, json={"name": "Once"})
    assert first.status_code == 201 and again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    shape(again.json(), INSTANCE_KEYS)
    after = {i["id"] for i in (await api.get("/api/instances", headers=bob.key)).json()["instances"]}
    assert after - before == {first.json()["id"]}
    other = await api.post(
        "/api/instances", headers={**bob.key, "Idempotency-Key": "create-once-other"}, json={"name": "Two"}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    for iid in (first.json()["id"], other.json()["id"]):
        assert (await api.delete(f"/api/instances/{iid}", headers=bob.key)).status_code == 200
