"""Fixture of the deployment tests: every service running as a process, and its /metrics text.

The services run as in ``make run`` (``python -m wa_<svc>``, ``WA_PROFILE=embedded``, the
simulator engine), on free loopback ports, against the session's fresh RabbitMQ vhost
(``amqp_url``) and SQLite stores in a temporary directory (migrated first), so that the
dashboard and alert-rule tests compare their queries with what running services really expose.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from tests.harness import free_port

# module -> (env prefix, has a store to migrate)
SERVICES = {
    "wa_auth": ("AUTH_", True),
    "wa_gateway": ("GATEWAY_", False),
    "wa_session_worker": ("WORKER_", True),
    "wa_webhooks": ("WEBHOOKS_", True),
    "wa_stats": ("STATS_", True),
}


@dataclass
class Running:
    """The services' /metrics texts, keyed by module."""

    metrics: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def families(self) -> set[str]:
        from tests.deploy.helpers import exposition_names

        names: set[str] = set()
        for text in self.metrics.values():
            names |= exposition_names(text)
        return names


def _env(module: str, amqp_url: str, workdir: Path, port: int) -> dict[str, str]:
    prefix, has_store = SERVICES[module]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WA_", "AUTH_", "GATEWAY_", "WORKER_", "WEBHOOKS_", "STATS_", "ADMIN_"))
    }
    env.update(
        WA_PROFILE="embedded",
        WA_ENGINE="simulator",
        AMQP_URL=amqp_url,
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
        WA_SHARDS="8",
        **{f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port)},
    )
    if has_store:
        env[f"{prefix}DATABASE_URL"] = f"sqlite:///{workdir / (module + '.db')}"
    if module == "wa_session_worker":
        env["WORKER_ID"] = "deploy-test-worker"
    return env


async def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
async def running_services(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    workdir = tmp_path_factory.mktemp("deploy-services")
    ports = {m: free_port() for m in SERVICES}

    # Migrations first. In this process (alembic, one store after the other, in a thread): on a
    # busy machine each extra interpreter start costs seconds.
    from wa_common.migrations import upgrade

    def migrate_all() -> None:
        for module, (prefix, store) in SERVICES.items():
            if store:
                upgrade(module, _env(module, amqp_url, workdir, ports[module])[f"{prefix}DATABASE_URL"])

    await asyncio.to_thread(migrate_all)

    procs: dict[str, asyncio.subprocess.Process] = {}
    logs = {m: (workdir / f"{m}.log").open("wb") for m in SERVICES}
    try:
        for module in SERVICES:
            procs[module] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                cwd=workdir,
                env=_env(module, amqp_url, workdir, ports[module]),
                stdout=logs[module],
                stderr=logs[module],
                start_new_session=True,
            )
        running = Running(ports=ports)
        async with httpx.AsyncClient(timeout=5) as client:
            for module, port in ports.items():

                async def healthy(module: str = module, port: int = port) -> bool:
                    proc = procs[module]
                    if proc.returncode is not None:
                        tail = await _log_tail(workdir / f"{module}.log")
                        raise AssertionError(f"{module} exited {proc.returncode}:\n{tail}")
                    try:
                        return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await wait_for(healthy, timeout_s=60, message=f"{module} /readyz == 200")
            # Some traffic, so that labelled HTTP series exist too.
            for port in ports.values():
                await client.get(f"http://127.0.0.1:{port}/healthz")
                await client.get(f"http://127.0.0.1:{port}/no-such-route")
            for module, port in ports.items():
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert response.status_code == 200, f"{module} /metrics answered {response.status_code}"
                running.metrics[module] = response.text
        yield running
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for module, proc in procs.items():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            logs[module].close()
