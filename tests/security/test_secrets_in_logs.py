"""Finding 7: a failing database write must not put the secrets it carried into the logs.

SQLAlchemy used to log a failing statement's bound parameters, which put a webhook secret, a
custom ``Authorization`` header value, an argon2 hash and a sealed API key in the logs. This
test forces real write failures in the real stores (a PostgreSQL trigger that raises on the
tables holding those secrets), drives requests that write them, waits until every service has
logged its failure, and then greps every service's log for the secrets it used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import AMQP_HOST, VhostFactory, wait_for
from tests.harness import Cluster

pytestmark = pytest.mark.e2e

FORCED = "forced failure by the secrets-in-logs test"
SECRET_CREATE = "whsec-create-5f2d8a91c3"
HEADER_CREATE = "Bearer hdr-create-77aa12ef"
SECRET_UPDATE = "whsec-update-0b9e44d1a7"
HEADER_UPDATE = "Bearer hdr-update-c41f0e6b"
NEW_PASSWORD = "new-passphrase-9d8c7b6a"


@pytest.fixture(scope="module")
async def cluster(
    vhost_factory: VhostFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost_factory()}"
    env = {"GATEWAY_RPC_TIMEOUT_S": "3", "GATEWAY_ALLOW_PRIVATE_WEBHOOK_URLS": "true", "LOG_LEVEL": "DEBUG"}
    c = Cluster(amqp_url, work_dir=tmp_path_factory.mktemp("secrets"), env=env)
    try:
        await c.start(timeout_s=120)
        yield c
    finally:
        await c.stop()


async def _fail_writes(cluster: Cluster, service: str, table: str, when: str) -> None:
    """Make every ``when`` (``INSERT``/``UPDATE``) on ``table`` of ``service``'s store fail."""
    url = cluster.processes[service if service != "worker" else "worker-1"].env[
        {"auth": "AUTH_", "webhooks": "WEBHOOKS_", "worker": "WORKER_"}[service] + "DATABASE_URL"
    ]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION forced_failure() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{FORCED}'; END $$ LANGUAGE plpgsql"
        )
        await conn.execute(
            f"CREATE TRIGGER forced_failure BEFORE {when} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION forced_failure()"
        )
    finally:
        await conn.close()


def _log(cluster: Cluster, name: str) -> str:
    return Path(cluster.processes[name].log_path).read_text(errors="replace")


async def test_failed_writes_never_log_the_secrets_they_carried(cluster: Cluster) -> None:
    login = await cluster.login()
    admin = {"Authorization": f"Bearer {login['token']}"}
    user = await cluster.create_user(login["token"])
    user_login = await cluster.login(user["email"], user["password"])
    api_key = user_login["user"]["apiKey"]
    bearer = {"Authorization": f"Bearer {user_login['token']}"}
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=30) as api:
        first = await api.post("/api/instances", headers=bearer, json={"name": "before the failures"})
        assert first.status_code == 201, first.text
        instance_id = first.json()["id"]

        await _fail_writes(cluster, "worker", "instances", "UPDATE")
        await _fail_writes(cluster, "webhooks", "webhook_endpoints", "INSERT OR UPDATE")
        await _fail_writes(cluster, "auth", "users", "UPDATE")

        # The worker's update fails (instances UPDATE): the gateway answers 5xx after its deadline.
        update = await api.put(
            f"/api/instances/{instance_id}",
            headers=bearer,
            json={"webhookSettings": {"secret": SECRET_UPDATE, "headers": {"Authorization": HEADER_UPDATE}}},
        )
        assert update.status_code >= 500, update.text
        # The create succeeds in the worker; the dispatcher's copy of the settings fails to write.
        created = await api.post(
            "/api/instances",
            headers=bearer,
            json={
                "name": "after the failures",
                "webhookUrl": "http://127.0.0.1:9/hook",
                "webhookEnabled": True,
                "webhookSecret": SECRET_CREATE,
                "headers": {"Authorization": HEADER_CREATE},
            },
        )
        assert created.status_code == 201, created.text
        # Auth's writes of a new argon2 hash and of a new sealed API key fail.
        change = await api.post(
            "/api/auth/password",
            headers=bearer,
            json={"currentPassword": user["password"], "newPassword": NEW_PASSWORD},
        )
        assert change.status_code >= 500, change.text
        rotate = await api.post(f"/api/users/{user_login['user']['id']}/api-key", headers=admin)
        assert rotate.status_code >= 500, rotate.text

    # Every service that owns one of those stores logged its failure (with the trigger's message,
    # or auth, which logs error types only, with the driver's error type) ...
    for name in ("worker-1", "webhooks", "auth"):

        def logged(name: str = name) -> bool:
            text = _log(cluster, name)
            return FORCED in text or "asyncpg.exceptions.RaiseError" in text

        await wait_for(logged, timeout_s=30, interval_s=0.3, message=f"{name} logged its failed write")
    # ... and no log of any service holds a secret, a hash or a bound parameter list.
    secrets = [SECRET_CREATE, HEADER_CREATE, SECRET_UPDATE, HEADER_UPDATE, NEW_PASSWORD, user["password"]]
    secrets += [api_key, "$argon2", "hdr-create", "hdr-update"]
    for name in cluster.processes:
        text = _log(cluster, name)
        for secret in secrets:
            assert secret not in text, f"{name}'s log contains {secret[:12]}…"
        assert "[parameters:" not in text, f"{name}'s log contains SQL parameters"
