"""Helpers of the contract tests: instance creation and linking through the public API."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import wait_for

REFERENCE_CREATE_BODY: dict[str, Any] = {
    "name": "Primary WhatsApp",
    "description": "Corporate account",
    "webhookUrl": "https://example.com/webhook",
    "webhookEnabled": True,
    "notifyReceived": True,
    "notifySent": True,
    "notifyDelivery": False,
    "notifyRead": False,
    "maxRetries": 3,
    "retryInterval": 60000,
    "webhookSecret": "optional-secret-key",
    "headers": {"Custom-Header": "custom-value"},
}

INSTANCE_KEYS = {
    "id",
    "name",
    "description",
    "userId",
    "status",
    "webhookUrl",
    "webhookEnabled",
    "createdAt",
    "updatedAt",
}
PAGINATION_KEYS = {"total", "limit", "skip", "hasMore"}


def shape(body: Any, keys: set[str]) -> dict[str, Any]:
    """Assert ``body`` is an object holding at least ``keys``; returns it."""
    assert isinstance(body, dict), body
    missing = keys - set(body)
    assert not missing, f"missing {missing} in {body}"
    return body


def pagination(body: dict[str, Any], limit: int, skip: int = 0) -> None:
    page = shape(body["pagination"], PAGINATION_KEYS)
    assert page["limit"] == limit and page["skip"] == skip
    assert isinstance(page["total"], int) and isinstance(page["hasMore"], bool)


async def create_instance(api: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    body = {"name": "contract test", **fields}
    response = await api.post("/api/instances", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def wait_qr(api: httpx.AsyncClient, headers: dict[str, str], instance_id: str) -> str:
    """Poll ``GET /api/instances/{id}/qr`` (202 while generating) until 200; returns the code."""

    async def ready() -> str | None:
        response = await api.get(f"/api/instances/{instance_id}/qr", headers=headers)
        assert response.status_code in (200, 202), response.text
        return response.json().get("qrCode") if response.status_code == 200 else None

    code: str = await wait_for(ready, timeout_s=30, interval_s=0.2, message="QR code")
    return code


async def link(
    api: httpx.AsyncClient, admin: dict[str, str], owner: dict[str, str], instance_id: str, phone: str
) -> None:
    """Link ``instance_id`` as ``phone``: wait for its QR, scan it with the simulator admin route,
    wait until the status is ``connected``."""
    await wait_qr(api, owner, instance_id)
    response = await api.post(
        f"/api/admin/sim/instances/{instance_id}/scan", headers=admin, json={"phone": phone}
    )
    assert response.status_code == 200, response.text

    async def connected() -> bool:
        response = await api.get(f"/api/whatsapp/{instance_id}/status", headers=owner)
        return response.status_code == 200 and response.json()["ready"] is True

    await wait_for(connected, timeout_s=30, interval_s=0.2, message="instance connected")
