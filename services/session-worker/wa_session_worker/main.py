"""Entry point: ``python -m wa_session_worker [serve|migrate]``.

Start: bus (topology) → store → engine → query and user-event consumers → shard manager (which
acquires a fair share of shards, starting their sessions and consuming their queues).
SIGTERM: shards are given up first (consumers cancelled, sessions stopped, leases released, so
another worker takes them within a renewal interval), then the engine, the store and the bus close.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from wa_common.cli import run_cli
from wa_common.db import create_engine, ping
from wa_common.logs import get_logger
from wa_common.migrations import upgrade
from wa_common.runtime import Runtime, create_app, serve
from wa_session_worker.consumers import start_consumers
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.sql import SqlRepository
from wa_session_worker.service import outbox
from wa_session_worker.service.core import WorkerService
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


def build_app(settings: WorkerSettings | None = None) -> FastAPI:
    """The session-worker service as an ASGI app (started and stopped by its lifespan)."""
    settings = settings or WorkerSettings()
    runtime = Runtime(SERVICE, settings)
    app = create_app(runtime, title="Session worker (internal)")

    engine = create_engine(settings.database_url)
    app.state.engine = engine
    sql = SqlRepository(engine, settings.database_url)
    repo = build_repository(settings, sql)
    leases = LeaseStore(engine, settings.shard_count)
    assert runtime.bus is not None
    service = WorkerService(
        settings, repo, runtime.bus, leases, store_url=settings.mongodb_url or settings.database_url
    )
    manager = ShardManager(leases, settings, service)
    app.state.service = service
    app.state.shards = manager

    async def database_ready() -> bool:
        return await ping(engine)

    runtime.health.add("database", database_ready)
    if repo is not sql:
        runtime.health.add("document_store", repo.ping)

    async def housekeeping() -> None:
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            service.update_session_gauge()
            if loop.time() - last_prune > PRUNE_INTERVAL_S:
                try:
                    pruned = await service.prune()
                    if pruned:
                        log.info("old recent events and idempotency keys pruned", count=pruned)
                except Exception as exc:
                    log.warning("prune failed", error=str(exc))
                last_prune = loop.time()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    @runtime.on_start
    async def start() -> None:
        from wa_session_worker.engines.factory import build_engine

        await repo.start()
        wa = build_engine(settings, service.on_engine_event, bus=runtime.bus, node=settings.id)
        await wa.start()
        service.engine = wa
        await start_consumers(service)
        await manager.start()
        runtime.tasks.spawn(manager.renewal_loop(), name="lease-renewal")
        runtime.tasks.spawn(manager.rebalance_loop(), name="shard-rebalance")
        runtime.tasks.spawn(housekeeping(), name="worker-housekeeping")
        runtime.tasks.spawn(
            outbox.relay_loop(
                repo,
                service.bus,
                service.owned_shards,
                interval_s=settings.outbox_relay_interval_s,
                grace_s=settings.outbox_grace_s,
            ),
            name="outbox-relay",
        )
        runtime.tasks.spawn(service.published.run(), name="outbox-cleanup")
        log.info("worker started", worker_id=settings.id, shards=settings.shard_count)

    # Stop hooks run in reverse registration order.
    runtime.on_stop(engine.dispose)
    runtime.on_stop(repo.close)

    @runtime.on_stop
    async def forget_published() -> None:
        # After the sessions stopped, before the store closes: entries of events already
        # confirmed are not published again after a clean restart.
        try:
            await service.published.flush()
        except Exception as exc:
            log.warning("outbox entries left for the relay at shutdown", error=str(exc))

    @runtime.on_stop
    async def close_engine() -> None:
        await service.stop_all()
        if service.engine is not None:
            await service.engine.close()

    runtime.on_stop(manager.stop)

    return app


def main() -> None:
    settings = WorkerSettings()
    run_cli(
        SERVICE,
        serve=lambda: serve(build_app(settings), settings, service=SERVICE),
        migrate=lambda: upgrade("wa_session_worker", settings.database_url),
    )
