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
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.support.http import Handler, HttpServer
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

    def release(self, vhost: str) -> None:
        """Delete ``vhost`` now (a cluster test is done with it). Late in a full run the broker
        holds every earlier test's quorum queues otherwise, and has been seen to stop answering
        connection handshakes for more than 30 s."""
        if vhost in self.created:
            self.created.remove(vhost)
            rabbitmqctl("delete_vhost", vhost)

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


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "wa_test", migrate: str | None = None) -> AsyncIterator[str]:
    """URL of a new PostgreSQL database named ``<prefix>_<ulid>`` (``.ci/run`` removes leftovers
    of ``wa_test_*``), upgraded to ``migrate``'s newest schema when a service package is named,
    dropped on exit."""
    import asyncpg

    from wa_common.migrations import upgrade

    name = f"{prefix}_{new_id().lower()}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        if migrate is not None:
            await asyncio.to_thread(upgrade, migrate, f"{base}/{name}")
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database (dropped at the end of the session)."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def http_servers() -> AsyncIterator[Callable[..., Awaitable[HttpServer]]]:
    """``await http_servers(handler=None, host="127.0.0.1")`` starts a real HTTP server on loopback
    (``tests/support/http.py``); every one started is stopped after the test."""
    started: list[HttpServer] = []

    async def start(handler: Handler | None = None, host: str = "127.0.0.1") -> HttpServer:
        server = await HttpServer(handler, host=host).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


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


async def raw_bus_request(connection: Any, queue: str, body: bytes, timeout_s: float = 10.0) -> Any:
    """Publish ``body`` as it is (malformed requests included) to ``queue`` with a reply-to
    queue of its own, and return the service's :class:`~wa_common.schemas.Reply`; fails when
    none arrives within ``timeout_s``. ``connection`` is an open aio-pika connection."""
    import aio_pika

    from wa_common.schemas import Reply

    channel = await connection.channel()
    try:
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        correlation = new_id()
        await channel.default_exchange.publish(
            aio_pika.Message(body, reply_to=replies.name, correlation_id=correlation), routing_key=queue
        )

        async def reply() -> Any:
            return await replies.get(no_ack=True, fail=False)

        message = await wait_for(reply, timeout_s=timeout_s, message=f"a reply from {queue}")
        assert message.correlation_id == correlation
        return Reply.from_bytes(message.body)
    finally:
        await channel.close()
