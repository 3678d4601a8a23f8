"""Contract gaps, against the real services: the error for a body that is not JSON, the
``maxInstances`` 429, the gateway's access log, and the QR answers (``expiresAt``, the image's
``ETag``/``X-QR-Expires-At``, 202 ``logged_out``)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from conftest import wait_for
from tests.contract.conftest import User
from tests.contract.helpers import create_instance, wait_qr
from tests.harness import Cluster
from tests.support.logs import json_lines

pytestmark = pytest.mark.e2e


async def test_a_body_that_is_not_json_is_400_saying_where(api: httpx.AsyncClient, alice: User) -> None:
    response = await api.post(
        "/api/instances",
        headers={**alice.key, "content-type": "application/json"},
        content=b'{"name": "broken",\n "description": nope}',
    )
    assert response.status_code == 400
    body = response.json()
    assert body == {
        "error": "Invalid request: the body is not valid JSON (line 2, column 17: Expecting value)"
    }, body


async def test_max_instances_is_429_without_a_period(
    api: httpx.AsyncClient, cluster: Cluster, admin: User
) -> None:
    erin = await cluster.create_user(admin.token)
    login = await cluster.login(erin["email"], erin["password"])
    h = {"x-api-key": login["user"]["apiKey"]}
    response = await api.put(
        f"/api/users/{login['user']['id']}/limits", headers=admin.key, json={"maxInstances": 1}
    )
    assert response.status_code == 200, response.text
    await create_instance(api, h, name="the one")

    async def refused() -> httpx.Response | None:
        response = await api.post("/api/instances", headers=h, json={"name": "one too many"})
        if response.status_code == 201:  # stats had not counted the first one yet
            await api.delete(f"/api/instances/{response.json()['id']}", headers=h)
            return None
        return response

    response = await wait_for(refused, timeout_s=15, interval_s=0.3, message="create refused by maxInstances")
    assert response.status_code == 429
    assert response.json() == {
        "error": "Usage limit exceeded: maxInstances (1 instance at once) reached; "
        "delete an instance or ask an administrator to raise the limit"
    }
    assert "retry-after" not in response.headers


async def test_the_access_log_has_one_line_per_request(
    api: httpx.AsyncClient, cluster: Cluster, alice: User
) -> None:
    iid = await create_instance(api, alice.key, name="access log")
    run = secrets.token_hex(4)
    health_cid, cid, unknown_cid = f"health-{run}", f"access-{run}", f"unknown-{run}"
    assert (await api.get("/healthz", headers={"x-correlation-id": health_cid})).status_code == 200
    response = await api.get(
        f"/api/instances/{iid}/activity",
        params={"limit": 5, "startDate": "2023-01-01T00:00:00Z", "secret": f"query-secret-{run}"},
        headers={**alice.key, "x-correlation-id": cid},
    )
    assert response.status_code == 200, response.text
    response = await api.get(
        f"/api/instances/{iid}", headers={"x-api-key": "wrong", "x-correlation-id": unknown_cid}
    )
    assert response.status_code == 401

    def logged() -> list[dict[str, Any]] | None:
        lines = [x for x in json_lines(cluster.processes["gateway"].log_path) if x.get("event") == "request"]
        return lines if any(x.get("correlation_id") == unknown_cid for x in lines) else None

    lines = await wait_for(logged, timeout_s=10, message="the access log lines")
    (line,) = [x for x in lines if x.get("correlation_id") == cid]
    assert line["logger"] == "wa_gateway.access" and line["level"] == "info"
    assert line["method"] == "GET" and line["route"] == "/api/instances/{instanceId}/activity"
    assert line["status"] == 200 and line["user_id"] == alice.id
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    (refused,) = [x for x in lines if x.get("correlation_id") == unknown_cid]
    assert refused["status"] == 401 and "user_id" not in refused
    assert not [x for x in lines if x.get("correlation_id") == health_cid], "/healthz is not logged"
    text = json.dumps([line, refused])
    for secret in (alice.api_key, f"query-secret-{run}", iid, "startDate"):
        assert secret not in text, secret
    await api.delete(f"/api/instances/{iid}", headers=alice.key)


async def test_qr_answers_carry_the_expiry_and_logged_out_is_said(
    api: httpx.AsyncClient, alice: User
) -> None:
    iid = await create_instance(api, alice.key, name="qr expiry")
    code = await wait_qr(api, alice.key, iid)
    response = await api.get(f"/api/whatsapp/{iid}/qr", headers=alice.key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["qrCode"] == code
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    assert expires.tzinfo is not None and expires > datetime.now(UTC)
    image = await api.get(f"/api/instances/{iid}/qr", headers=alice.key, params={"format": "svg"})
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/svg+xml")
    assert image.headers["x-qr-expires-at"] == body["expiresAt"]
    png = await api.get(f"/api/instances/{iid}/qr", headers=alice.key, params={"format": "png"})
    assert png.headers["etag"] == image.headers["etag"]  # names the code, not the rendering

    response = await api.post(f"/api/instances/{iid}/logout", headers=alice.key)
    assert response.status_code == 200, response.text

    async def logged_out() -> dict[str, Any] | None:
        response = await api.get(f"/api/instances/{iid}/qr", headers=alice.key)
        assert response.status_code in (200, 202), response.text
        answer: dict[str, Any] = response.json()
        return answer if response.status_code == 202 and answer["status"] == "logged_out" else None

    answer = await wait_for(logged_out, timeout_s=15, interval_s=0.2, message="202 logged_out")
    assert "reconnect" in answer["message"].lower()
    await api.delete(f"/api/instances/{iid}", headers=alice.key)
