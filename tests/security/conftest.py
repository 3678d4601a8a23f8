"""The security suite's system: the real services as processes (``tests/harness.py``) on a fresh
vhost and fresh databases, attacked only through the gateway's public HTTP API, as the attack
run of the security-hardening issue was.

Two gateways share the backend:

- ``gateway``: no trusted proxies (the TCP peer is the client), a low per-user rate limit
  (20/s, burst 40), short body timeouts (idle 1 s, total 5 s);
- ``gateway-b``: ``GATEWAY_TRUSTED_PROXIES=127.0.0.1/32`` (so a test can act from several client
  addresses through ``X-Forwarded-For``) and at most 5 unknown API keys per address per minute.

Fixtures: ``sec`` (:class:`SecuritySystem`), ``new_user`` (a fresh user per call, each with its
own rate-limit bucket).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import AMQP_HOST, VhostFactory
from tests.contract.conftest import User
from tests.harness import Cluster

__all__ = ["SecuritySystem", "User", "create_instance"]

SECURITY_ENV = {
    "WORKER_SIM_DELIVERED_MS": "50",
    "WORKER_SIM_READ_MS": "100",
    "GATEWAY_RATE_LIMIT_PER_S": "20",
    "GATEWAY_RATE_LIMIT_BURST": "40",
    "GATEWAY_BODY_IDLE_TIMEOUT_S": "1",
    "GATEWAY_BODY_TIMEOUT_S": "5",
    "GATEWAY_USAGE_FLUSH_S": "0.2",
}
GATEWAY_B_ENV = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32", "GATEWAY_AUTH_FAILURES_PER_MIN": "5"}


@dataclass
class SecuritySystem:
    cluster: Cluster
    api: httpx.AsyncClient  # on ``gateway``
    api_b: httpx.AsyncClient  # on ``gateway-b`` (trusts X-Forwarded-For from loopback)
    admin: User
    amqp_url: str


async def _user(api: httpx.AsyncClient, cluster: Cluster, admin_token: str, role: str = "user") -> User:
    created = await cluster.create_user(admin_token, role=role)
    login = await cluster.login(created["email"], created["password"])
    return User(
        id=login["user"]["id"],
        email=created["email"],
        password=created["password"],
        token=login["token"],
        api_key=login["user"]["apiKey"],
    )


@pytest.fixture(scope="package")
async def sec(
    vhost_factory: VhostFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecuritySystem]:
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost_factory()}"
    cluster = Cluster(amqp_url, work_dir=tmp_path_factory.mktemp("security"), env=dict(SECURITY_ENV))
    try:
        await cluster.start(timeout_s=120)
        extra = {**GATEWAY_B_ENV, "GATEWAY_AUTH_URL": cluster.url("auth")}
        await cluster._start_one("gateway-b", "gateway", extra, 60.0, migrate=False)
        async with (
            httpx.AsyncClient(base_url=cluster.gateway_url, timeout=30) as api,
            httpx.AsyncClient(base_url=cluster.url("gateway-b"), timeout=30) as api_b,
        ):
            login = await cluster.login()
            admin = User(
                id=login["user"]["id"],
                email=cluster.admin_email,
                password=cluster.admin_password,
                token=login["token"],
                api_key=login["user"]["apiKey"],
            )
            yield SecuritySystem(cluster, api, api_b, admin, amqp_url)
    finally:
        await cluster.stop()


@pytest.fixture
def new_user(sec: SecuritySystem) -> Callable[..., Awaitable[User]]:
    async def make(role: str = "user") -> User:
        return await _user(sec.api, sec.cluster, sec.admin.token, role)

    return make


async def create_instance(sec: SecuritySystem, user: User, name: str = "sec") -> dict[str, Any]:
    response = await sec.api.post("/api/instances", headers=user.bearer, json={"name": name})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
