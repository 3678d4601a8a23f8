"""End-to-end fixtures: the whole system as processes (``tests/harness.py``) on its own fresh
vhost and databases, driven only through the public REST API with httpx, and a real webhook
receiver on loopback (``tests/support/webhooks.py``).

Scenarios 1-5 share one cluster (``system``, session scope, two session workers);
scenario 6 (faults) starts its own in ``test_faults.py``. Simulator timings are short
(receipts after 50/100 ms) so nothing waits long; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import AMQP_HOST, VhostFactory, wait_for
from tests.harness import Cluster
from tests.support.webhooks import WebhookReceiver

# Environment of every e2e cluster: short simulator timings, private targets allowed (the
# webhook receiver and the media server are on loopback), no rate limit.
E2E_ENV = {
    "WORKER_SIM_DELIVERED_MS": "50",
    "WORKER_SIM_READ_MS": "100",
    "WORKER_MEDIA_ALLOW_PRIVATE": "true",
    "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    "GATEWAY_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
    "GATEWAY_RATE_LIMIT_PER_S": "0",
    "WEBHOOKS_POLL_INTERVAL_S": "0.2",
    "GATEWAY_STREAM_LINGER_S": "0.2",
}


@dataclass
class System:
    """A running cluster, an httpx client on its gateway and the admin's bearer headers."""

    cluster: Cluster
    api: httpx.AsyncClient
    admin: dict[str, str]
    amqp_url: str


@contextlib.asynccontextmanager
async def run_system(
    vhost_factory: VhostFactory,
    work_dir: Path,
    *,
    workers: int,
    env: dict[str, str] | None = None,
    api_timeout_s: float = 30,
) -> AsyncIterator[System]:
    """A cluster started on a fresh vhost and settled, with a client on its gateway and the admin
    logged in; stopped on exit."""
    vhost = vhost_factory()
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    cluster = Cluster(amqp_url, work_dir=work_dir, workers=workers, env={**E2E_ENV, **(env or {})})
    try:
        await cluster.start(timeout_s=120)
        await settled(cluster, workers)
        async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=api_timeout_s) as api:
            login = await cluster.login()
            yield System(cluster, api, {"Authorization": f"Bearer {login['token']}"}, amqp_url)
    finally:
        await cluster.stop()
        await asyncio.to_thread(vhost_factory.release, vhost)


async def settled(cluster: Cluster, workers: int, timeout_s: float = 60) -> None:
    """Wait until every worker holds its share of the shards (the first worker takes them all at
    start and hands some over when the others join; a session moved meanwhile would make the
    scenarios' timings depend on the rebalancing)."""
    login = await cluster.login()
    headers = {"Authorization": f"Bearer {login['token']}"}
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as api:

        async def balanced() -> bool:
            body = (await api.get("/api/admin/workers", headers=headers)).json()
            held = [len(w["shards"]) for w in body["workers"] if w["alive"]]
            fair = body["shardCount"] // workers
            return len(held) == workers and not body["unownedShards"] and all(n >= fair for n in held)

        await wait_for(
            balanced, timeout_s=timeout_s, interval_s=0.2, message="shards spread over the workers"
        )


@pytest.fixture(scope="session")
async def system(
    vhost_factory: VhostFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    async with run_system(vhost_factory, tmp_path_factory.mktemp("e2e"), workers=2) as system:
        yield system


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver().start()
    yield r
    await r.stop()
