"""Contract: statistics, limits, database management, workers and webhook deliveries."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import httpx
import pytest

from conftest import wait_for
from tests.contract.conftest import User
from tests.contract.helpers import create_instance, link, shape
from tests.support.http import HttpServer

pytestmark = pytest.mark.e2e

USAGE_KEYS = {
    "messagesSent",
    "messagesReceived",
    "mediaSent",
    "mediaReceived",
    "totalMediaSize",
    "apiCalls",
    "webhookSent",
}


async def test_user_and_instance_stats(api: httpx.AsyncClient, alice: User) -> None:
    iid = await create_instance(api, alice.key, name="stats")
    for period in ("week", "month", "year", "all"):
        response = await api.get("/api/stats/user", headers=alice.key, params={"period": period})
        assert response.status_code == 200, response.text
        body = shape(response.json(), {"total", "instances"})
        shape(body["total"], USAGE_KEYS | {"instanceCount"})
    response = await api.get("/api/stats/user", headers=alice.key, params={"period": "decade"})
    assert response.status_code == 400

    async def instance_stats() -> httpx.Response | None:
        response = await api.get(
            f"/api/stats/instances/{iid}", headers=alice.bearer, params={"period": "today"}
        )
        return response if response.status_code == 200 else None

    response = await wait_for(instance_stats, timeout_s=15, message="instance known to stats")
    usage = shape(response.json()["usage"], USAGE_KEYS | {"dailyStats"})
    assert isinstance(usage["dailyStats"], list)
    for period in ("week", "month", "all"):
        response = await api.get(f"/api/stats/instances/{iid}", headers=alice.key, params={"period": period})
        assert response.status_code == 200


async def test_api_calls_are_metered(api: httpx.AsyncClient, alice: User) -> None:
    before = (await api.get("/api/stats/user", headers=alice.key, params={"period": "all"})).json()["total"][
        "apiCalls"
    ]
    for _ in range(5):
        assert (await api.get("/api/instances", headers=alice.key)).status_code == 200

    async def counted() -> bool:
        body = (await api.get("/api/stats/user", headers=alice.key, params={"period": "all"})).json()
        return bool(body["total"]["apiCalls"] >= before + 5)

    await wait_for(counted, timeout_s=15, message="API calls counted by stats")


async def test_system_stats_is_admin_only(api: httpx.AsyncClient, admin: User, alice: User) -> None:
    response = await api.get("/api/stats/system", headers=admin.bearer)
    assert response.status_code == 200, response.text
    body = shape(response.json(), {"instances", "users", "usage"})
    shape(body["instances"], {"total", "active"})
    shape(body["users"], {"total", "active"})
    shape(body["usage"], USAGE_KEYS)
    response = await api.get("/api/stats/system", headers=alice.key)
    assert response.status_code == 403 and response.json()["error"]


async def test_limits_block_sends_with_429(api: httpx.AsyncClient, cluster, admin: User) -> None:
    carol = await cluster.create_user(admin.token)
    login = await cluster.login(carol["email"], carol["password"])
    h = {"x-api-key": login["user"]["apiKey"]}
    user_id = login["user"]["id"]
    response = await api.get(f"/api/users/{user_id}/limits", headers=admin.key)
    assert response.status_code == 200, response.text
    shape(response.json(), {"userId", "limits"})
    response = await api.put(
        f"/api/users/{user_id}/limits",
        headers=admin.key,
        json={"maxMessagesSent": 1, "maxApiCalls": None, "maxInstances": None},
    )
    assert response.status_code == 200, response.text
    assert response.json()["limits"]["maxMessagesSent"] == 1
    response = await api.put(f"/api/users/{user_id}/limits", headers=h, json={"maxMessagesSent": 100})
    assert response.status_code == 403

    iid = await create_instance(api, h, name="limited")
    await link(api, admin.key, h, iid, "1555" + f"{secrets.randbelow(10**7):07d}")

    async def refused() -> httpx.Response | None:
        response = await api.post(
            f"/api/whatsapp/{iid}/send", headers=h, json={"phone": "79001234567", "message": "count me"}
        )
        assert response.status_code in (200, 429), response.text
        return response if response.status_code == 429 else None

    response = await wait_for(
        refused, timeout_s=20, interval_s=0.3, message="send refused by maxMessagesSent"
    )
    assert "maxMessagesSent" in response.json()["error"] and int(response.headers["Retry-After"]) > 0
    # Other calls still work; raising the limit lifts the block at once.
    assert (await api.get(f"/api/instances/{iid}", headers=h)).status_code == 200
    response = await api.put(
        f"/api/users/{user_id}/limits", headers=admin.key, json={"maxMessagesSent": 1000}
    )
    assert response.status_code == 200
    response = await api.post(
        f"/api/whatsapp/{iid}/send", headers=h, json={"phone": "79001234567", "message": "ok"}
    )
    assert response.status_code == 200, response.text


async def test_max_instances_is_429(api: httpx.AsyncClient, cluster, admin: User) -> None:
    dave = await cluster.create_user(admin.token)
    login = await cluster.login(dave["email"], dave["password"])
    h = {"x-api-key": login["user"]["apiKey"]}
    response = await api.put(
        f"/api/users/{login['user']['id']}/limits", headers=admin.key, json={"maxInstances": 1}
    )
    assert response.status_code == 200
    await create_instance(api, h, name="only one")

    async def refused() -> httpx.Response | None:
        response = await api.post("/api/instances", headers=h, json={"name": "second"})
        if response.status_code == 201:
            await api.delete(f"/api/instances/{response.json()['id']}", headers=h)
            return None
        return response

    response = await wait_for(refused, timeout_s=15, interval_s=0.3, message="create refused by maxInstances")
    assert response.status_code == 429 and "maxInstances" in response.json()["error"]


async def test_db_status_and_switch(api: httpx.AsyncClient, admin: User, alice: User) -> None:
    response = await api.get("/api/db/status", headers=admin.key)
    assert response.status_code == 200, response.text
    body = shape(response.json(), {"provider", "url", "services"})
    assert body["provider"] == "postgresql"
    assert "@" not in body["url"] or ":" not in body["url"].split("@")[0].split("//")[-1]  # no password
    assert "session-worker" in body["services"]
    for name in ("stats", "webhook-dispatcher"):
        store = body["services"][name]
        assert store is not None and store["provider"] == "postgresql", body
        assert "password" not in store["url"] and "@" not in store["url"]
    response = await api.post("/api/db/switch", headers=admin.key, json={"provider": "mongodb"})
    assert response.status_code == 409 and "not available" in response.json()["error"]
    assert (await api.get("/api/db/status", headers=alice.key)).status_code == 403
    assert (
        await api.post("/api/db/switch", headers=alice.key, json={"provider": "sqlite"})
    ).status_code == 403


async def test_admin_workers(api: httpx.AsyncClient, admin: User, alice: User) -> None:
    response = await api.get("/api/admin/workers", headers=admin.bearer)
    assert response.status_code == 200, response.text
    workers = response.json()["workers"]
    assert workers and all("shards" in w for w in workers)
    assert (await api.get("/api/admin/workers", headers=alice.key)).status_code == 403


async def test_webhook_deliveries(
    api: httpx.AsyncClient, alice: User, http_servers: Callable[..., Awaitable[HttpServer]]
) -> None:
    receiver = await http_servers()  # a webhook receiver on loopback answering 200
    iid = await create_instance(
        api, alice.key, name="hooks", webhookUrl=receiver.url(), webhookEnabled=True, webhookSecret="s3cret"
    )

    async def test_sent() -> httpx.Response | None:
        # The dispatcher learns the instance from instance.created (asynchronously): 404 until then.
        response = await api.post(f"/api/instances/{iid}/webhooks/test", headers=alice.key)
        return response if response.status_code == 202 else None

    response = await wait_for(test_sent, timeout_s=15, interval_s=0.3, message="webhook test accepted")
    accepted = shape(response.json(), {"success", "message", "delivery"})
    delivery_id = accepted["delivery"]["id"]

    async def delivered() -> dict | None:
        response = await api.get(
            f"/api/instances/{iid}/webhooks/deliveries", headers=alice.key, params={"limit": 10}
        )
        assert response.status_code == 200, response.text
        for d in response.json()["deliveries"]:
            if d["id"] == delivery_id and d["status"] == "delivered":
                return dict(response.json())
        return None

    page = await wait_for(delivered, timeout_s=20, message="test webhook delivered")
    shape(page, {"deliveries", "pagination"})
    assert any(b"webhook_test" in r.body for r in receiver.requests)
    response = await api.post(
        f"/api/instances/{iid}/webhooks/deliveries/{delivery_id}/redeliver", headers=alice.key
    )
    assert response.status_code == 202, response.text
    assert response.json()["delivery"]["redeliveryOf"] == delivery_id
    response = await api.post(f"/api/instances/{iid}/webhooks/deliveries/NOPE/redeliver", headers=alice.key)
    assert response.status_code == 404


async def test_max_api_calls_blocks_every_call(api: httpx.AsyncClient, cluster, admin: User) -> None:
    eve = await cluster.create_user(admin.token)
    login = await cluster.login(eve["email"], eve["password"])
    h = {"x-api-key": login["user"]["apiKey"]}
    user_id = login["user"]["id"]
    response = await api.put(f"/api/users/{user_id}/limits", headers=admin.key, json={"maxApiCalls": 3})
    assert response.status_code == 200, response.text

    async def refused() -> httpx.Response | None:
        response = await api.get("/api/instances", headers=h)
        assert response.status_code in (200, 429), response.text
        return response if response.status_code == 429 else None

    response = await wait_for(refused, timeout_s=20, interval_s=0.3, message="calls refused by maxApiCalls")
    assert "maxApiCalls" in response.json()["error"] and int(response.headers["Retry-After"]) > 0
    assert (await api.get("/api/stats/user", headers=h)).status_code == 429  # every call, not only sends
    response = await api.put(f"/api/users/{user_id}/limits", headers=admin.key, json={"maxApiCalls": None})
    assert response.status_code == 200
    assert (await api.get("/api/instances", headers=h)).status_code == 200
