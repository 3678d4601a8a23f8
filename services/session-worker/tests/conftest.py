"""Fixtures of the session-worker tests: migrated stores (SQLite, PostgreSQL, MongoDB if set) and
the in-memory repository; the service's parts on the in-memory store with a scripted engine
(``parts``, fast tests of service logic); the worker in process over the real RabbitMQ (``ctx``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    EXCHANGE_EVENTS,
    QUERY_ROUTING_KEY,
    Bus,
    Delivery,
    RpcClient,
    shard_for,
    shard_queue,
)
from wa_common.clock import ManualClock
from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Command, Event, Query, Reply
from wa_common.schemas.session import SessionCommand, SessionQuery
from wa_common.sim_client import sim_scan
from wa_session_worker.engines.base import (
    Connected,
    DeviceRecord,
    Engine,
    EventCallback,
    OutgoingMedia,
    SendResult,
    SessionStatus,
    WaContact,
)
from wa_session_worker.main import Worker, build_app, build_worker
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.memory import MemoryRepository
from wa_session_worker.repository.sql import SqlRepository
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore

MONGODB_URL = os.environ.get("MONGODB_URL")


def migrate(url: str) -> None:
    """Upgrade the worker store at ``url`` (in a thread: Alembic runs its own event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, "wa_session_worker", url).result()


def in_process_settings(
    worker_id: str, amqp_url: str, database_url: str, shard_count: int, **overrides: Any
) -> WorkerSettings:
    """Settings of a worker run inside the test process: embedded profile, any port, short
    leases (3 s) and simulator receipts after 20/40 ms; ``overrides`` add or replace fields."""
    values: dict[str, Any] = dict(
        id=worker_id,
        profile="embedded",
        amqp_url=amqp_url,
        shard_count=shard_count,
        database_url=database_url,
        port=0,
        lease_ttl_s=3,
        lease_renew_s=0.5,
        lease_safety_s=1,
        sim_delivered_ms=20,
        sim_read_ms=40,
    )
    values.update(overrides)
    return WorkerSettings(**values)


@pytest.fixture(scope="session")
def worker_settings() -> Callable[..., WorkerSettings]:
    """:func:`in_process_settings`, for module fixtures (a tests folder is not importable)."""
    return in_process_settings


@pytest.fixture(scope="session")
def worker_pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated to the worker's newest schema."""
    migrate(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def worker_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("worker") / "worker.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mongodb", "memory"])
def repo_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The repository implementation of a contract leg, and its migrated SQL store's URL (SQL
    legs only: looked up here, in a plain fixture, so the memory leg needs no database)."""
    if request.param in ("sqlite", "postgresql"):
        fixture = "worker_sqlite_url" if request.param == "sqlite" else "worker_pg_url"
        return request.param, request.getfixturevalue(fixture)
    return request.param, None


@pytest.fixture
async def repo(repo_kind: tuple[str, str | None]) -> AsyncIterator[Repository]:
    """Every reachable repository implementation (MongoDB only when ``MONGODB_URL`` is set), and
    the in-memory one that fast tests of the service use in their place."""
    kind, url = repo_kind
    if kind == "memory":
        yield MemoryRepository()
        return
    if kind == "mongodb":
        if not MONGODB_URL:
            pytest.skip("MongoDB leg skipped: set MONGODB_URL=mongodb://host:27017 to run it")
        from wa_session_worker.repository.mongo import MongoRepository

        mongo = MongoRepository(MONGODB_URL, f"wa_test_{new_id().lower()}")
        await mongo.start()
        yield mongo
        await mongo.client.drop_database(mongo.db.name)
        await mongo.close()
        return
    assert url is not None
    engine = create_engine(url)
    yield SqlRepository(engine, url)
    await engine.dispose()


# --- fast tests of the service parts: the in-memory store, a recording bus, a scripted engine -----

UNIT_SHARDS = 4
ALICE = Caller(user_id="alice")


class RecordingBus:
    """What the parts publish, kept in lists (events, and commands as ``(routing key, body)``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.commands: list[tuple[str, bytes]] = []

    async def publish_event(self, event: Event) -> None:
        self.events.append(event)

    async def publish_events(self, events: list[Event]) -> list[BaseException | None]:
        self.events.extend(events)
        return [None] * len(events)

    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        self.commands.append((routing_key, body))

    def of(self, type_: str, instance_id: str) -> list[Event]:
        return [e for e in self.events if e.type == type_ and e.instance_id == instance_id]

    async def published(
        self, type_: str, instance_id: str, count: int = 1, timeout_s: float = 5.0
    ) -> list[Event]:
        """:meth:`of` once it holds ``count`` events (a send's event is published after its reply)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found := self.of(type_, instance_id)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{count} {type_} events of {instance_id} not published in {timeout_s}s")
            await asyncio.sleep(0.01)
        return found


class ScriptedEngine(Engine):
    """An engine whose sessions do what the test says: a started session is ``connected`` (or
    ``start_status``); sends are recorded and answered with ids ``FAKE<n>`` unless ``fail`` is
    set (raised by the next send)."""

    name = "scripted"

    def __init__(self, on_event: EventCallback) -> None:
        super().__init__(on_event)
        self.statuses: dict[str, SessionStatus] = {}
        self.start_status = SessionStatus.CONNECTED
        self.sent: list[tuple[str, str, str]] = []  # (instance id, recipient, text or mimetype)
        self.fail: Exception | None = None
        self.contacts: list[WaContact] = []

    async def start_session(self, instance_id: str, device: DeviceRecord | None) -> None:
        self.statuses[instance_id] = self.start_status

    async def stop_session(self, instance_id: str) -> None:
        self.statuses.pop(instance_id, None)

    async def logout(self, instance_id: str) -> None:
        self.statuses.pop(instance_id, None)

    def status(self, instance_id: str) -> SessionStatus:
        return self.statuses.get(instance_id, SessionStatus.DISCONNECTED)

    def _send(self, instance_id: str, to_jid: str, what: str) -> SendResult:
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        self.sent.append((instance_id, to_jid, what))
        return SendResult(f"FAKE{len(self.sent)}", 1_767_225_600 + len(self.sent))

    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        return self._send(instance_id, to_jid, text)

    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        return self._send(instance_id, to_jid, media.mimetype)

    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        return list(self.contacts)

    async def check_number(self, instance_id: str, phone: str) -> str | None:
        return f"{phone}@s.whatsapp.net"

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        return "ABCD-EFGH"


def on_the_wire(reply: Reply | None) -> Reply:
    """``reply`` as its caller reads it (sent as JSON)."""
    assert reply is not None, "the request was dropped"
    return Reply.from_bytes(reply.to_bytes())


class Parts:
    """A worker's parts on the in-memory store (:func:`wa_session_worker.main.build_worker`),
    every shard open, time from a :class:`ManualClock`; requests go through the routers as the
    bus would hand them over, replies come back as JSON."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.repo = MemoryRepository()
        self.bus = RecordingBus()
        self.clock = ManualClock()
        engines: list[ScriptedEngine] = []

        def engine(on_event: EventCallback) -> Engine:
            engines.append(ScriptedEngine(on_event))
            return engines[0]

        leases = LeaseStore(create_engine("sqlite:///:memory:"), settings.shard_count)
        self.worker = build_worker(
            settings,
            self.repo,
            cast(Bus, self.bus),
            leases,
            store_url="memory://",
            engine=engine,
            clock=self.clock,
        )
        self.engine = engines[0]
        self.worker.sessions.running.open_shards.update(range(settings.shard_count))

    async def cmd(
        self, name: str, iid: str, payload: dict[str, Any] | None = None, caller: Caller = ALICE, **kw: Any
    ) -> Reply:
        command = Command(name=name, caller=caller, instance_id=iid, payload=payload or {}, **kw)
        return on_the_wire(await self.worker.commands.dispatch(command))

    async def q(
        self, name: str, iid: str | None, payload: dict[str, Any] | None = None, caller: Caller = ALICE
    ) -> Reply:
        query = Query(name=name, caller=caller, instance_id=iid, payload=payload or {})
        return on_the_wire(await self.worker.query_router.dispatch(query))

    async def instance(self, caller: Caller = ALICE) -> str:
        """A new instance of ``caller``'s, its session connected."""
        iid = new_id()
        reply = await self.cmd(SessionCommand.CREATE_INSTANCE, iid, {"name": "unit"}, caller)
        assert reply.status == 201, reply
        await self.worker.recorder.on_engine_event(Connected(iid, "15550000000@s.whatsapp.net"))
        return iid


@pytest.fixture
def parts() -> Parts:
    """Fast tests of the service logic: see :class:`Parts`."""
    return Parts(in_process_settings("unit", "amqp://unused/", "sqlite:///:memory:", UNIT_SHARDS))


# --- the worker in process: its app (lifespan), the real RabbitMQ, a SQLite store ---------------

CTX_SHARDS = 8


class WorkerCtx:
    """The in-process worker of :func:`ctx` and a client of it: requests are sent the way the
    gateway sends them (RPC to the shard queue or ``wa.queries``); ``events`` collects every
    event published."""

    S = CTX_SHARDS

    def __init__(self, bus: Bus, rpc: RpcClient, events: list[Event], worker: Worker) -> None:
        self.bus, self.rpc, self.events, self.worker = bus, rpc, events, worker

    async def cmd(
        self, name: str, iid: str, caller: Caller = ALICE, payload: dict[str, Any] | None = None, **kw: Any
    ) -> Reply:
        command = Command(name=name, caller=caller, instance_id=iid, payload=payload or {}, **kw)
        return await self.rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, self.S)), command)

    async def q(
        self, name: str, iid: str | None = None, caller: Caller = ALICE, payload: dict[str, Any] | None = None
    ) -> Reply:
        return await self.rpc.call(
            EXCHANGE_COMMANDS,
            QUERY_ROUTING_KEY,
            Query(name=name, caller=caller, instance_id=iid, payload=payload or {}),
        )

    def of(self, type_: str, iid: str) -> list[Event]:
        return [e for e in self.events if e.type == type_ and e.instance_id == iid]

    async def feed(self, iid: str, **query: Any) -> dict[str, Any]:
        """Alice's events feed of ``iid`` (``None`` values left out of the query)."""
        payload = {k: v for k, v in query.items() if v is not None}
        reply = await self.q(SessionQuery.EVENTS, iid, ALICE, payload)
        assert reply.ok, reply
        return dict(reply.data)

    async def paired(
        self, phone: str, caller: Caller = ALICE, push_name: str | None = None, **create: Any
    ) -> str:
        """A new instance of ``caller``'s, linked by a simulated phone ``phone``."""
        iid = new_id()
        reply = await self.cmd(SessionCommand.CREATE_INSTANCE, iid, caller, {"name": f"n{phone}", **create})
        assert reply.status == 201, reply

        async def code() -> str | None:
            r = await self.q(SessionQuery.QR, iid, caller)
            return r.data["qrCode"] if r.status == 200 else None

        qr = await wait_for(code, timeout_s=10, message="QR")
        await sim_scan(self.bus, qr, phone, push_name=push_name)

        async def connected() -> bool:
            return (await self.q(SessionQuery.STATUS, iid, caller)).data["status"] == "connected"

        await wait_for(connected, timeout_s=10, message="connected")
        return iid


@pytest.fixture(scope="session")
async def ctx(
    amqp_url: str, vhost_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerCtx]:
    """One in-process worker for the modules that test the service over the bus (a vhost of its
    own: no other test's worker consumes its shard queues; media from loopback allowed, at most
    1 KiB)."""
    amqp_url = f"{amqp_url.rpartition('/')[0]}/{vhost_factory()}"
    path: Path = tmp_path_factory.mktemp("svc") / "worker.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(upgrade, "wa_session_worker", url)
    settings = in_process_settings(
        "svc-worker", amqp_url, url, CTX_SHARDS, media_allow_private=True, media_max_bytes=1024
    )
    app = build_app(settings)
    events: list[Event] = []
    async with app.state.runtime.lifespan(app):
        bus = Bus(amqp_url, service="svc-test", shard_count=CTX_SHARDS, prefetch=64, delivery_limit=5)
        await bus.connect()
        rpc = RpcClient(bus)
        await rpc.start()

        async def on_event(delivery: Delivery) -> None:
            events.append(Event.from_bytes(delivery.body))

        await bus.consume_transient([(EXCHANGE_EVENTS, "#")], on_event, name_prefix="wa.test.events")
        await wait_for(
            lambda: len(app.state.shards.owned()) == CTX_SHARDS,
            timeout_s=20,
            message="worker owns all shards",
        )
        yield WorkerCtx(bus, rpc, events, app.state.worker)
        await bus.close()
