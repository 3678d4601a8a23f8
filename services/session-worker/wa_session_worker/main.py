"""Entry point: ``python -m wa_session_worker [serve|migrate]``.

Start: bus (topology) → store → engine → query and user-event consumers → shard manager (which
acquires a fair share of shards, starting their sessions and consuming their queues).
SIGTERM: shards are given up first (consumers cancelled, sessions stopped, leases released, so
another worker takes them within a renewal interval), then the engine, the store and the bus close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI

from wa_common.bus import Bus
from wa_common.bus.router import Router
from wa_common.cli import run_cli
from wa_common.clock import Clock, utcnow
from wa_common.db import create_engine, ping
from wa_common.logs import get_logger
from wa_common.migrations import upgrade
from wa_common.runtime import Runtime, create_app, serve
from wa_session_worker.consumers import commands_router, queries_router, start_consumers
from wa_session_worker.engines.base import Engine, EventCallback
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.sql import SqlRepository
from wa_session_worker.service import outbox
from wa_session_worker.service.admin import Admin
from wa_session_worker.service.contacts import Contacts
from wa_session_worker.service.instances import Instances
from wa_session_worker.service.messaging import Messaging
from wa_session_worker.service.queries import Queries
from wa_session_worker.service.recorder import Recorder
from wa_session_worker.service.sessions import Running, Sessions, ShardRunner
from wa_session_worker.service.turns import InstanceTurns
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore
from wa_session_worker.shards.manager import ShardManager

SERVICE = "session-worker"
HOUSEKEEPING_INTERVAL_S = 5.0
PRUNE_INTERVAL_S = 600.0

log = get_logger(__name__)


def build_repository(settings: WorkerSettings, sql: SqlRepository) -> Repository:
    """The document store: MongoDB when ``WORKER_MONGODB_URL`` is set, else the SQL store."""
    if settings.mongodb_url:
        from wa_session_worker.repository.mongo import MongoRepository

        return MongoRepository(settings.mongodb_url, settings.mongodb_database)
    return sql


@dataclass(frozen=True)
class Worker:
    """The session worker's parts (:func:`build_worker`)."""

    repo: Repository
    engine: Engine
    recorder: Recorder
    sessions: Sessions
    instances: Instances
    messaging: Messaging
    contacts: Contacts
    queries: Queries
    admin: Admin
    turns: InstanceTurns
    commands: Router
    query_router: Router
    shards: ShardRunner


def build_worker(
    settings: WorkerSettings,
    repo: Repository,
    bus: Bus,
    leases: LeaseStore,
    *,
    store_url: str,
    engine: Callable[[EventCallback], Engine],
    clock: Clock = utcnow,
) -> Worker:
    """Build every part with what it needs, in dependency order: the recorder (which knows the
    sessions running here) first, since the engine reports its events to it; then the engine
    (``engine(on_event)``), the parts that call it, the routers, and the shard owner, which
    consumes a shard's queue with the commands router."""
    running = Running()
    recorder = Recorder(settings, repo, bus, running, clock=clock)
    wa = engine(recorder.on_engine_event)
    sessions = Sessions(settings, wa, running)
    instances = Instances(settings, repo, wa, sessions, recorder, clock=clock)
    messaging = Messaging(settings, repo, wa, sessions, recorder, clock=clock)
    contacts = Contacts(settings, repo, wa, sessions, recorder, clock=clock)
    queries = Queries(repo, running)
    admin = Admin(settings, repo, bus, leases, store_url=store_url, clock=clock)
    turns = InstanceTurns()
    commands = commands_router(instances, messaging, contacts, turns)
    return Worker(
        repo=repo,
        engine=wa,
        recorder=recorder,
        sessions=sessions,
        instances=instances,
        messaging=messaging,
        contacts=contacts,
        queries=queries,
        admin=admin,
        turns=turns,
        commands=commands,
        query_router=queries_router(queries, admin),
        shards=ShardRunner(sessions, repo, bus, commands.consumer(bus), recorder),
    )


def build_app(settings: WorkerSettings | None = None) -> FastAPI:
    """The session-worker service as an ASGI app (started and stopped by its lifespan)."""
    from wa_session_worker.engines.factory import build_engine

    settings = settings or WorkerSettings()
    runtime = Runtime(SERVICE, settings)
    app = create_app(runtime, title="Session worker (internal)")

    database = create_engine(settings.database_url)
    app.state.engine = database
    sql = SqlRepository(database, settings.database_url)
    repo = build_repository(settings, sql)
    leases = LeaseStore(database, settings.shard_count)
    bus = runtime.bus
    assert bus is not None
    worker = build_worker(
        settings,
        repo,
        bus,
        leases,
        store_url=settings.mongodb_url or settings.database_url,
        engine=lambda on_event: build_engine(settings, on_event, bus=bus, node=settings.id),
    )
    manager = ShardManager(leases, settings, worker.shards)
    app.state.worker = worker
    app.state.shards = manager
    engine_started = False

    async def database_ready() -> bool:
        return await ping(database)

    runtime.health.add("database", database_ready)
    if repo is not sql:
        runtime.health.add("document_store", repo.ping)

    async def housekeeping() -> None:
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            worker.sessions.update_gauge()
            if loop.time() - last_prune > PRUNE_INTERVAL_S:
                try:
                    pruned = await worker.admin.prune()
                    if pruned:
                        log.info("old recent events and idempotency keys pruned", count=pruned)
                except Exception as exc:
                    log.warning("prune failed", error=str(exc))
                last_prune = loop.time()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    @runtime.on_start
    async def start() -> None:
        nonlocal engine_started
        await repo.start()
        await worker.engine.start()
        engine_started = True
        await start_consumers(bus, worker.query_router, worker.admin)
        await manager.start()
        runtime.tasks.spawn(manager.renewal_loop(), name="lease-renewal")
        runtime.tasks.spawn(manager.rebalance_loop(), name="shard-rebalance")
        runtime.tasks.spawn(housekeeping(), name="worker-housekeeping")
        runtime.tasks.spawn(
            outbox.relay_loop(
                repo,
                bus,
                worker.shards.owned_shards,
                interval_s=settings.outbox_relay_interval_s,
                grace_s=settings.outbox_grace_s,
            ),
            name="outbox-relay",
        )
        runtime.tasks.spawn(worker.recorder.published.run(), name="outbox-cleanup")
        log.info("worker started", worker_id=settings.id, shards=settings.shard_count)

    # Stop hooks run in reverse registration order.
    runtime.on_stop(database.dispose)
    runtime.on_stop(repo.close)

    @runtime.on_stop
    async def forget_published() -> None:
        # After the sessions stopped, before the store closes: entries of events already
        # confirmed are not published again after a clean restart.
        try:
            await worker.recorder.published.flush()
        except Exception as exc:
            log.warning("outbox entries left for the relay at shutdown", error=str(exc))

    @runtime.on_stop
    async def close_engine() -> None:
        await worker.sessions.stop_all()
        if engine_started:
            await worker.engine.close()

    runtime.on_stop(manager.stop)

    return app


def main() -> None:
    settings = WorkerSettings()
    run_cli(
        SERVICE,
        serve=lambda: serve(build_app(settings), settings, service=SERVICE),
        migrate=lambda: upgrade("wa_session_worker", settings.database_url),
    )
