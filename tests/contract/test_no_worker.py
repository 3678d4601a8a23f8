"""A second gateway on a vhost of its own, where no worker, stats or dispatcher consumes: a
request that nobody answers is a 503 with a clear message (never a hang), and API calls are
metered in batches (one bus message per interval, not per call).

The gateway runs as a process (``tests/harness.py``) with ``GATEWAY_RPC_TIMEOUT_S=1`` and uses
the contract cluster's auth service (tokens and API keys are checked over HTTP), and a rate
limit of 1 request/s with bursts of 30 per user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from conftest import AMQP_HOST, wait_for
from tests.harness import Cluster
from wa_common.bus import EXCHANGE_EVENTS, Bus, Delivery
from wa_common.schemas import Event, EventType

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def lone_gateway(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, vhost_factory: Callable[[], str]
) -> AsyncIterator[tuple[Cluster, str]]:
    """A gateway alone on a vhost of its own, authenticating against the cluster's auth."""
    url = f"amqp://guest:guest@{AMQP_HOST}/{vhost_factory()}"
    lone = Cluster(
        url,
        work_dir=tmp_path_factory.mktemp("lone-gateway"),
        services=("gateway",),
        service_env={
            "gateway": {
                "GATEWAY_RPC_TIMEOUT_S": "1",
                "GATEWAY_RATE_LIMIT_PER_S": "1",
                "GATEWAY_RATE_LIMIT_BURST": "30",
                "GATEWAY_AUTH_URL": cluster.url("auth"),
            }
        },
    )
    try:
        await lone.start()
        yield lone, url
    finally:
        await lone.stop()


async def test_no_worker_is_503_not_a_hang(cluster: Cluster, lone_gateway: tuple[Cluster, str]) -> None:
    lone, _ = lone_gateway
    login = await cluster.login()
    headers = {"Authorization": f"Bearer {login['token']}"}
    async with httpx.AsyncClient(base_url=lone.gateway_url, timeout=10) as api:
        started = time.monotonic()
        response = await api.get("/api/instances", headers=headers)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert "no answer from the session workers" in response.json()["error"]
        assert response.headers["Retry-After"]
        assert elapsed < 5
        response = await api.post(
            "/api/whatsapp/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA/send",
            headers=headers,
            json={"phone": "79001234567", "message": "x"},
        )
        assert response.status_code == 503
        # Stats is not running either: its routes are 503 too, with its name.
        response = await api.get("/api/stats/user", headers=headers)
        assert response.status_code == 503 and "stats" in response.json()["error"]


async def test_api_calls_are_published_in_batches(
    cluster: Cluster, lone_gateway: tuple[Cluster, str]
) -> None:
    lone, url = lone_gateway
    # A user of this test alone: another test's calls may still be answered (and counted) now.
    admin = await cluster.login()
    user = await cluster.create_user(admin["token"])
    user_id = user["id"]
    headers = {"x-api-key": user["apiKey"]}
    batches: list[Event] = []

    async def on_event(delivery: Delivery) -> None:
        batches.append(Event.from_bytes(delivery.body))

    bus = Bus(url, service="gateway-test")
    await bus.connect(declare=False)
    try:
        await bus.consume_transient(
            [(EXCHANGE_EVENTS, f"{EventType.API_USAGE}.#")], on_event, name_prefix="t.usage"
        )
        async with httpx.AsyncClient(base_url=lone.gateway_url, timeout=10) as api:
            # At once (each waits GATEWAY_RPC_TIMEOUT_S for a worker that is not there).
            await asyncio.gather(
                *(api.get("/api/whatsapp/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA/qr", headers=headers) for _ in range(20))
            )

        def counted() -> int:
            return sum(c["count"] for e in batches for c in e.data["counts"] if c["userId"] == user_id)

        await wait_for(lambda: counted() >= 20, timeout_s=10, message="20 API calls in usage batches")
        assert counted() == 20
        assert len(batches) < 20  # batched, not one message per call
        counts = [c for e in batches for c in e.data["counts"] if c["userId"] == user_id]
        # Every call failed (503: no worker confirmed the instance is the caller's), so none is
        # attributed to the instance: a call counts against an instance only when it succeeded.
        assert {c["instanceId"] for c in counts} == {None}
    finally:
        await bus.close()


async def test_rate_limit_is_429_with_retry_after(
    cluster: Cluster, lone_gateway: tuple[Cluster, str]
) -> None:
    lone, _ = lone_gateway
    admin = await cluster.login()
    user = await cluster.create_user(admin["token"])  # a bucket of its own
    headers = {"x-api-key": user["apiKey"]}
    async with httpx.AsyncClient(base_url=lone.gateway_url, timeout=10) as api:
        responses = await asyncio.gather(
            *(api.get("/api/whatsapp/not.an.id/status", headers=headers) for _ in range(40))
        )
    limited = [r for r in responses if r.status_code == 429]
    assert 5 <= len(limited) <= 10, [r.status_code for r in responses]
    assert "Rate limit exceeded" in limited[0].json()["error"]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert {r.status_code for r in responses} <= {404, 429}  # "not.an.id" cannot be an id: 404 at once
