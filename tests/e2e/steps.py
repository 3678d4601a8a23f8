"""Steps of the end-to-end scenarios through the public REST API (httpx only)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from conftest import wait_for
from wa_common.bus.topology import shard_for


def new_phone() -> str:
    """A fresh simulated phone number (``1555`` + 7 digits)."""
    return "1555" + f"{secrets.randbelow(10**7):07d}"


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


async def login(api: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await api.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["token"] and body["user"]["email"] == email
    return body


async def create_user(api: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    """A new user created by the admin; returns (email, password)."""
    email = f"e2e-{secrets.token_hex(5)}@example.com"
    password = "pw-" + secrets.token_hex(8)
    response = await api.post(
        "/api/users",
        headers=admin,
        json={"email": email, "password": password, "firstName": "E2E", "lastName": "User", "role": "user"},
    )
    assert response.status_code in (200, 201), response.text
    return email, password


async def user_headers(api: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    email, password = await create_user(api, admin)
    token = (await login(api, email, password))["token"]
    return {"Authorization": f"Bearer {token}"}


async def create_instance(
    api: httpx.AsyncClient, headers: dict[str, str], name: str, webhook_url: str | None, secret: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "description": "end-to-end test"}
    if webhook_url:
        body.update(
            webhookUrl=webhook_url,
            webhookEnabled=True,
            notifyReceived=True,
            notifySent=True,
            notifyDelivery=True,
            notifyRead=True,
            maxRetries=5,
            retryInterval=1000,
        )
        if secret:
            body["webhookSecret"] = secret
    response = await api.post("/api/instances", headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_qr(
    api: httpx.AsyncClient, headers: dict[str, str], iid: str, timeout_s: float = 30
) -> list[int]:
    """Poll ``GET /qr`` until 200; returns the status codes seen (202s, then the 200)."""
    seen: list[int] = []

    async def ready() -> bool:
        response = await api.get(f"/api/instances/{iid}/qr", headers=headers)
        assert response.status_code in (200, 202), response.text
        seen.append(response.status_code)
        if response.status_code == 202:
            assert response.json()["status"] == "generating"
            return False
        return bool(response.json()["qrCode"])

    await wait_for(ready, timeout_s=timeout_s, interval_s=0.1, message=f"QR code of {iid}")
    return seen


async def scan(api: httpx.AsyncClient, admin: dict[str, str], iid: str, phone: str) -> None:
    """A simulated phone scans the instance's QR code (simulator-only admin route)."""
    response = await api.post(
        f"/api/admin/sim/instances/{iid}/scan", headers=admin, json={"phone": phone, "pushName": "E2E Phone"}
    )
    assert response.status_code == 200, response.text


async def wait_status(
    api: httpx.AsyncClient, headers: dict[str, str], iid: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        response = await api.get(f"/api/instances/{iid}/status", headers=headers)
        if response.status_code == 200 and response.json()["status"] == status:
            body: dict[str, Any] = response.json()
            return body
        return None

    result: dict[str, Any] = await wait_for(
        reached, timeout_s=timeout_s, interval_s=0.1, message=f"{iid} {status}"
    )
    return result


async def link(
    api: httpx.AsyncClient, admin: dict[str, str], headers: dict[str, str], iid: str, phone: str
) -> None:
    await wait_qr(api, headers, iid)
    await scan(api, admin, iid, phone)
    await wait_status(api, headers, iid, "connected")


async def worker_of(api: httpx.AsyncClient, admin: dict[str, str], iid: str) -> str:
    """The id of the live session worker that owns the instance's shard (waits for one)."""

    async def owner() -> str | None:
        workers = (await api.get("/api/admin/workers", headers=admin)).json()
        shard = shard_for(iid, workers["shardCount"])
        return next((w["id"] for w in workers["workers"] if shard in w["shards"] and w["alive"]), None)

    found: str = await wait_for(owner, timeout_s=30, interval_s=0.2, message=f"owner of {iid}")
    return found


async def send_text(api: httpx.AsyncClient, headers: dict[str, str], iid: str, phone: str, text: str) -> str:
    response = await api.post(
        f"/api/whatsapp/{iid}/send", headers=headers, json={"phone": phone, "message": text}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def history(
    api: httpx.AsyncClient, headers: dict[str, str], iid: str, chat: str, limit: int = 1000
) -> list[dict[str, Any]]:
    response = await api.get(
        f"/api/instances/{iid}/chats/{chat}/messages", headers=headers, params={"limit": limit}
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def instance_stats(api: httpx.AsyncClient, headers: dict[str, str], iid: str) -> dict[str, Any]:
    response = await api.get(f"/api/stats/instances/{iid}", headers=headers, params={"period": "all"})
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


async def events(
    api: httpx.AsyncClient, headers: dict[str, str], iid: str, types: str | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000}
    if types:
        params["types"] = types
    response = await api.get(f"/api/instances/{iid}/events", headers=headers, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    assert not response.json()["hasMore"], "more than 1000 recent events"
    return found
