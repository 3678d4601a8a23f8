"""Fixtures shared by every test directory: the real RabbitMQ and PostgreSQL of the machine.

Each test session gets a fresh RabbitMQ vhost and a fresh PostgreSQL database, removed at the
end, so runs never see each other's queues or rows. Nothing here is mocked: if the broker or the
database does not answer, the tests that need them fail (``.ci/run`` starts both first).

Environment: ``TEST_AMQP_HOST`` (default 127.0.0.1:5672, guest/guest), ``TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), ``RABBITMQCTL`` (default
``rabbitmqctl``, used to create the vhost and to close connections from the broker side).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from wa_common.ids import new_id

# Few shards in tests: every shard is a quorum queue (a Raft member in the broker) per vhost.
# Services started by tests inherit this; a test may still set its own.
os.environ.setdefault("WA_SHARDS", "8")

RABBITMQCTL = os.environ.get("RABBITMQCTL", "rabbitmqctl")
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def rabbitmqctl(*args: str, timeout_s: float = 120) -> str:
    """Run ``rabbitmqctl`` and return its stdout; raises ``CalledProcessError`` on failure.

    rabbitmqctl is a shell wrapper around an Erlang VM: on a timeout the whole process group is
    killed, so no stray VM keeps holding the broker's CLI distribution ports.
    """
    if shutil.which(RABBITMQCTL) is None:
        pytest.fail(f"{RABBITMQCTL} not found: the tests need the local RabbitMQ's control tool")
    proc = subprocess.Popen(
        [RABBITMQCTL, "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return out


def close_broker_connections(connection_name: str, vhost: str | None = None) -> int:
    """Close, from the broker side, every connection named ``connection_name``; returns how many."""
    listed = rabbitmqctl("-s", "list_connections", "pid", "vhost", "client_properties")
    closed = 0
    for line in listed.splitlines():
        pid, conn_vhost, props = [*line.split("\t", 2), "", ""][:3]
        if f'{{"connection_name","{connection_name}"}}' in props and vhost in (None, conn_vhost):
            rabbitmqctl("close_connection", pid, "closed by a test from the broker side")
            closed += 1
    return closed


class VhostFactory:
    """Creates fresh vhosts (guest has full rights) and deletes them all at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def __call__(self) -> str:
        vhost = f"wa_test_{new_id().lower()}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        self.created.append(vhost)
        return vhost

    def cleanup(self) -> None:
        for vhost in self.created:
            rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def vhost_factory() -> Iterator[VhostFactory]:
    """Make more vhosts, for tests whose queue arguments differ from the services' defaults."""
    factory = VhostFactory()
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def amqp_vhost(vhost_factory: VhostFactory) -> str:
    """Name of a fresh vhost shared by the session's tests (guest has full rights on it)."""
    return vhost_factory()


@pytest.fixture(scope="session")
def amqp_url(amqp_vhost: str) -> str:
    return f"amqp://guest:guest@{AMQP_HOST}/{amqp_vhost}"


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database (dropped at the end of the session)."""
    import asyncpg

    name = f"wa_test_{new_id().lower()}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` (sync or async) until it returns a truthy value; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{message} not reached within {timeout_s}s")
        await asyncio.sleep(interval_s)
