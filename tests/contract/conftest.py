"""The whole system as processes (``tests/harness.py``) for the contract tests, once per session.

Fixtures: ``cluster`` (the running services), ``admin`` / ``alice`` / ``bob`` (users with a JWT
``token`` and an ``apiKey``), ``api`` (an ``httpx.AsyncClient`` on the gateway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import Cluster


@dataclass
class User:
    id: str
    token: str
    api_key: str
    email: str = ""
    password: str = ""

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def key(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}


@pytest.fixture(scope="session")
async def cluster(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    work_dir: Path = tmp_path_factory.mktemp("cluster")
    c = Cluster(
        amqp_url,
        work_dir=work_dir,
        service_env={
            "gateway": {"GATEWAY_RATE_LIMIT_PER_S": "0", "GATEWAY_MAX_UPLOAD_BYTES": str(1024 * 1024)},
            "worker": {"WORKER_MEDIA_ALLOW_PRIVATE": "true"},
            "webhooks": {"WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true"},
            # The fuzzer's failed logins and password checks all come from 127.0.0.1: the
            # per-address throttle (tested in tests/security) must not lock the suite out.
            "auth": {"AUTH_LOGIN_MAX_FAILURES_PER_IP": "100000"},
        },
    )
    try:
        await c.start()
    except BaseException:
        await c.stop()
        raise
    yield c
    await c.stop()


async def _user(cluster: Cluster, admin_token: str) -> User:
    created = await cluster.create_user(admin_token)
    login = await cluster.login(created["email"], created["password"])
    return User(id=login["user"]["id"], token=login["token"], api_key=login["user"]["apiKey"])


@pytest.fixture(scope="session")
async def admin(cluster: Cluster) -> User:
    login = await cluster.login()
    return User(id=login["user"]["id"], token=login["token"], api_key=login["user"]["apiKey"])


@pytest.fixture(scope="session")
async def alice(cluster: Cluster, admin: User) -> User:
    return await _user(cluster, admin.token)


@pytest.fixture(scope="session")
async def bob(cluster: Cluster, admin: User) -> User:
    return await _user(cluster, admin.token)


@pytest.fixture(scope="session")
async def api(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=30) as client:
        yield client
