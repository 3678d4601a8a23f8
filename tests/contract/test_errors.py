"""Contract: the one JSON error shape, status codes, security headers."""

from __future__ import annotations

import httpx
import pytest

from tests.contract.conftest import User
from tests.contract.helpers import create_instance

pytestmark = pytest.mark.e2e


async def test_unauthenticated_is_401(api: httpx.AsyncClient) -> None:
    for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer not.a.jwt"}):
        response = await api.get("/api/instances", headers=headers)
        assert response.status_code == 401, response.text
        assert isinstance(response.json()["error"], str)


async def test_validation_is_400_with_details(api: httpx.AsyncClient, alice: User) -> None:
    response = await api.post("/api/instances", headers=alice.key, json={"description": "no name"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] and {"field": "name", "message": "Field required"} in body["details"]
    response = await api.post(
        "/api/instances", headers={**alice.key, "content-type": "application/json"}, content=b"{not json"
    )
    assert response.status_code == 400 and response.json()["error"]


async def test_limits_above_1000_are_400(api: httpx.AsyncClient, alice: User) -> None:
    iid = await create_instance(api, alice.key)
    for path in (
        f"/api/instances/{iid}/activity",
        f"/api/instances/{iid}/events",
        f"/api/whatsapp/{iid}/contacts/db",
        f"/api/instances/{iid}/chats/79001234567/messages",
    ):
        response = await api.get(path, headers=alice.key, params={"limit": 1001})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["details"][0]["field"] == "limit"
        assert "1000" in response.json()["error"]
    response = await api.get(
        f"/api/instances/{iid}/activity", headers=alice.key, params={"startDate": "yesterday"}
    )
    assert response.status_code == 400 and "startDate" in response.json()["error"]
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def test_unknown_instance_is_404(api: httpx.AsyncClient, alice: User) -> None:
    for path in (
        "/api/instances/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA",
        "/api/whatsapp/does-not-exist/status",
        "/api/instances/%20bad%20id/status",
    ):
        response = await api.get(path, headers=alice.key)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]


async def test_security_headers(api: httpx.AsyncClient, alice: User) -> None:
    response = await api.get("/api/instances", headers=alice.key)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-correlation-id"]


async def test_docs_and_openapi_are_public(api: httpx.AsyncClient) -> None:
    assert (await api.get("/docs")).status_code == 200
    doc = (await api.get("/openapi.json")).json()
    assert {"bearerAuth", "apiKeyAuth"} <= set(doc["components"]["securitySchemes"])
