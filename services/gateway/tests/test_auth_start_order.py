"""The gateway started before auth (as ``make run`` may start them): real processes.

The normal start order must not look like a failure: the gateway logs at INFO that auth's signing
keys will be fetched on first use, no warning; a request that needs the keys meanwhile is
answered 503 and logged as a warning; once auth is up the keys are fetched without any request
asking, and tokens work.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for
from tests.harness import Cluster
from tests.support.logs import json_lines

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(amqp_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(amqp_url, work_dir=tmp_path, services=())
    try:
        yield c
    finally:
        await c.stop()


def _about_auth(line: dict[str, Any]) -> bool:
    text = f"{line.get('event', '')} {line.get('error', '')}".lower()
    return "auth" in text or "signing keys" in text


def _fake_token() -> str:
    """A token whose header names an EdDSA key: verifying it needs auth's keys."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'EdDSA', 'kid': 'not-loaded-yet', 'typ': 'JWT'})}.{part({'sub': 'x'})}.c2ln"


async def test_gateway_before_auth_is_info_until_a_request_needs_the_keys(cluster: Cluster) -> None:
    # Auth is prepared (store migrated, port chosen) but not started; the gateway knows its URL.
    auth = cluster._register("auth", "auth", {"AUTH_DATABASE_URL": await cluster._create_database("auth")})
    await cluster._migrate(auth)
    gateway = cluster._register("gateway", "gateway", {})
    assert gateway.env["GATEWAY_AUTH_URL"] == auth.url
    await cluster._run(gateway, 90)  # ready: /readyz does not depend on auth
    log = gateway.log_path

    started = await wait_for(
        lambda: [x for x in json_lines(log) if "fetched on first use" in str(x.get("event"))],
        timeout_s=10,
        message="the INFO line about auth's keys",
    )
    assert started[0]["level"] == "info", started
    assert not [x for x in json_lines(log) if x.get("level") in ("warning", "error") and _about_auth(x)]

    # A request that needs the keys while auth is down: 503, and now a warning.
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as api:
        response = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {_fake_token()}"})
    assert response.status_code == 503, response.text
    await wait_for(
        lambda: [
            x
            for x in json_lines(log)
            if x.get("level") == "warning" and x.get("event") == "auth service unavailable"
        ],
        timeout_s=10,
        message="the warning of the request that needed the keys",
    )

    # Auth comes up: the gateway fetches the keys by itself, and logins and tokens work.
    await cluster._run(auth, 90)
    await wait_for(
        lambda: [x for x in json_lines(log) if x.get("event") == "signing keys loaded"],
        timeout_s=20,
        message="the keys fetched in the background",
    )
    login = await cluster.login()
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as api:
        me = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {login['token']}"})
    assert me.status_code == 200, me.text
    warnings = [x for x in json_lines(log) if x.get("level") in ("warning", "error") and _about_auth(x)]
    assert [x["event"] for x in warnings] == ["auth service unavailable"], warnings
