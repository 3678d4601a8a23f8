"""Contract: tenant isolation. For every instance-scoped endpoint, another user gets 404 (not
403) on the first user's instance, with both auth schemes; an admin sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.contract.conftest import User
from tests.contract.helpers import create_instance

pytestmark = pytest.mark.e2e

FAMILY_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/qr", None),
    ("POST", "/pairing-code", {"phone": "15550001234"}),
    ("POST", "/send", {"phone": "79001234567", "message": "hi"}),
    ("POST", "/send-media", {"phone": "79001234567", "url": "https://example.com/a.jpg"}),
    ("POST", "/send-file", None),
    ("POST", "/logout", None),
    ("GET", "/contacts", None),
    ("POST", "/contacts/add", {"phone": "79001234567", "name": "x"}),
    ("GET", "/contacts/db", None),
    ("POST", "/contacts/import", None),
    ("POST", "/contacts/save", {"number": "79001234567", "name": "x"}),
    ("GET", "/status", None),
]
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/instances/{id}", None),
    ("PUT", "/api/instances/{id}", {"name": "stolen"}),
    ("DELETE", "/api/instances/{id}", None),
    ("POST", "/api/instances/{id}/reconnect", None),
    ("GET", "/api/instances/{id}/activity", None),
    ("GET", "/api/instances/{id}/events", None),
    ("GET", "/api/instances/{id}/chats/79001234567@s.whatsapp.net/messages", None),
    ("GET", "/api/instances/{id}/webhooks/deliveries", None),
    ("POST", "/api/instances/{id}/webhooks/deliveries/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA/redeliver", None),
    ("POST", "/api/instances/{id}/webhooks/test", None),
    ("GET", "/api/stats/instances/{id}", None),
    *[(m, "/api/instances/{id}" + p, b) for m, p, b in FAMILY_ENDPOINTS],
    *[(m, "/api/whatsapp/{id}" + p, b) for m, p, b in FAMILY_ENDPOINTS],
]


@pytest.fixture(scope="module")
async def alices_instance(api: httpx.AsyncClient, alice: User) -> AsyncIterator[str]:
    iid = await create_instance(
        api, alice.key, name="private", webhookUrl="http://127.0.0.1:9/hook", webhookEnabled=True
    )
    yield iid
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def _call(
    api: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    if path.endswith("/send-file"):
        return await api.post(
            path, headers=headers, data={"phone": "79001234567"}, files={"file": ("a.txt", b"x")}
        )
    return await api.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
@pytest.mark.parametrize("scheme", ["bearer", "key"])
async def test_foreign_instance_is_404(
    api: httpx.AsyncClient,
    bob: User,
    alices_instance: str,
    method: str,
    template: str,
    body: Any,
    scheme: str,
) -> None:
    headers = bob.bearer if scheme == "bearer" else bob.key
    response = await _call(api, method, template.format(id=alices_instance), body, headers)
    assert response.status_code == 404, f"{method} {template}: {response.status_code} {response.text}"
    assert isinstance(response.json()["error"], str)


async def test_foreign_instance_not_listed(
    api: httpx.AsyncClient, admin: User, alice: User, bob: User, alices_instance: str
) -> None:
    ids = [i["id"] for i in (await api.get("/api/instances", headers=bob.key)).json()["instances"]]
    assert alices_instance not in ids
    assert (await api.get(f"/api/instances/{alices_instance}", headers=alice.key)).status_code == 200
    assert (await api.get(f"/api/instances/{alices_instance}", headers=admin.key)).status_code == 200
