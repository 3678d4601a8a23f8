"""kill -9 of a real dispatcher process with 1,000 deliveries pending; the SSRF guard end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import wait_for
from tests.harness import free_port
from tests.support.dispatcher import make_settings, start_stack, stop_stack
from wa_common.bus import Bus
from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.schemas import Event
from wa_common.schemas.events import InstanceSnapshot, WebhookSettings
from wa_common.schemas.status import DeliveryStatus
from wa_webhooks.models import Delivery
from wa_webhooks.repository import Repository

pytestmark = pytest.mark.integration


def snapshot_event(instance_id: str, url: str, **ws: object) -> Event:
    snap = InstanceSnapshot(
        instance_id=instance_id,
        user_id="u1",
        name="crash",
        webhook_url=url,
        webhook_enabled=True,
        webhook_settings=WebhookSettings(**ws),
        updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    return Event(type="instance.created", instance_id=instance_id, user_id="u1", data=snap.dump())


@pytest.mark.timeout(600)  # the figures below are generous for a loaded 2-core CI machine
async def test_kill_9_with_1000_pending_loses_nothing(amqp_url, fresh_db, http_servers, tmp_path: Path):
    # Until the kill every attempt times out (the receiver answers too late), so all 1,000
    # deliveries are still pending then; only per_host_concurrency attempts are in flight.
    failing = True

    async def behaviour(_r, _n):
        if failing:
            await asyncio.sleep(3)
        return 200

    rec = await http_servers(behaviour)
    port = free_port()
    env = {
        **os.environ,
        "WA_PROFILE": "embedded",
        "AMQP_URL": amqp_url,
        "WEBHOOKS_DATABASE_URL": fresh_db,
        "WEBHOOKS_PORT": str(port),
        "WEBHOOKS_ATTEMPT_TIMEOUT_S": "1",
        "WEBHOOKS_LEASE_S": "1",  # the floor is attempt timeout + 5 s
        "WEBHOOKS_PER_HOST_CONCURRENCY": "16",
        "WEBHOOKS_POLL_INTERVAL_S": "0.1",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "wa_webhooks"]
    await asyncio.to_thread(subprocess.run, [*cmd, "migrate"], env=env, check=True, timeout=120)
    log = (tmp_path / "dispatcher.log").open("wb")
    procs: list[subprocess.Popen[bytes]] = []

    async def start() -> None:
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))

        async def ready() -> bool:
            if procs[-1].poll() is not None:
                # A start that failed (e.g. the broker answered too slowly): restart, as a
                # supervisor would.
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
                return False
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"http://127.0.0.1:{port}/readyz", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout_s=120, message="dispatcher ready")

    engine = create_engine(fresh_db)
    repo = Repository(engine)
    bus = Bus(amqp_url, service="webhooks-crash-test")
    try:
        await start()
        await bus.connect(declare=False, timeout_s=60)
        iid = new_id()
        await bus.publish_event(snapshot_event(iid, rec.url(), max_retries=20, retry_interval=1000))
        await wait_for(lambda: repo.endpoints.get(iid), message="replica")
        events = [Event(type="connected", instance_id=iid, data={"instanceId": iid}) for _ in range(1000)]
        for i in range(0, len(events), 100):
            await asyncio.gather(*(bus.publish_event(e) for e in events[i : i + 100]))

        async def count(status: str | None = None) -> int:
            async with repo.sessions() as s:
                q = select(func.count()).select_from(Delivery)
                if status:
                    q = q.where(Delivery.status == status)
                return int((await s.execute(q)).scalar_one())

        await wait_for(lambda: _eq(count(), 1000), timeout_s=90, message="1000 deliveries in the outbox")
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(10)
        pending = await count("pending")
        assert pending == 1000, pending
        before = len(rec.requests)

        failing = False
        await start()
        published = {e.id for e in events}

        def all_received() -> bool:
            return {q.headers["x-webhook-id"] for q in rec.requests} >= published

        t_restart = time.monotonic()
        await wait_for(all_received, timeout_s=300, message="all 1000 delivered after the restart")
        drain_s = time.monotonic() - t_restart
        await wait_for(lambda: _eq(count("delivered"), 1000), timeout_s=20, message="all marked delivered")
        ids = [q.headers["x-webhook-id"] for q in rec.requests]
        assert set(ids) == published  # none lost, nothing unknown; duplicates carry the same id
        after = len(ids) - before
        print(f"pending at kill: {pending}; timed-out attempts before: {before}; requests after: {after}; ")
        print(f"restart → all delivered: {drain_s:.1f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        await bus.close()
        await engine.dispose()
        log.close()


async def _eq(value, expected: int) -> bool:
    return (await value) == expected


async def test_ssrf_guard_refuses_private_targets_end_to_end(amqp_url, fresh_db, http_servers):
    rec = await http_servers()
    rec6 = await http_servers(host="::1")

    async def resolver(host: str, port: int) -> list[str]:
        return {"localhost": ["127.0.0.1", "::1"], "evil.example": ["10.0.0.5"]}.get(host, ["93.184.215.14"])

    settings = make_settings(amqp_url, fresh_db, allow_private_targets=False)
    runtime, stack = await start_stack(settings, resolver=resolver)
    try:
        urls = [
            f"http://127.0.0.1:{rec.port}/hook",
            "http://169.254.169.254/latest/meta-data/",
            f"http://[::1]:{rec6.port}/hook",
            f"http://localhost:{rec.port}/hook",
            f"http://evil.example:{rec.port}/hook",
            f"http://[::ffff:127.0.0.1]:{rec.port}/hook",
        ]
        iids = [await stack.create_instance(url, max_retries=0) for url in urls]
        for iid in iids:
            await stack.publish("connected", iid, {"instanceId": iid})

        async def all_failed() -> bool:
            for iid in iids:
                rows, _, _ = await stack.dispatcher.repo.deliveries.page(
                    iid, status=DeliveryStatus.FAILED, limit=1, skip=0
                )
                if not rows:
                    return False
            return True

        await wait_for(all_failed, timeout_s=20, message="every delivery refused")
        for iid, url in zip(iids, urls, strict=True):
            page = (await stack.call("webhooks.deliveries.list", iid)).data
            attempt = page["deliveries"][0]["attempts"][0]
            assert attempt["outcome"] == "error" and attempt["statusCode"] is None, (url, attempt)
            assert attempt["error"].startswith("refused:"), (url, attempt)
        assert rec.requests == [] and rec6.requests == []
    finally:
        await stop_stack(runtime, stack)
