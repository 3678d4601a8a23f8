"""Entry point: ``python -m wa_stats [serve|migrate]``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI

from wa_common.cli import run_cli
from wa_common.clock import Clock, utcnow
from wa_common.db import create_engine, ping
from wa_common.migrations import upgrade
from wa_common.runtime import Runtime, create_app, serve
from wa_stats.consumers import StatsConsumers, stats_router
from wa_stats.repository import StatsRepository
from wa_stats.service import StatsService
from wa_stats.settings import StatsSettings

SERVICE = "stats"


def build_app(settings: StatsSettings | None = None, *, now: Clock = utcnow) -> FastAPI:
    """The stats service as an ASGI app (started and stopped by its lifespan).

    ``now`` is the service's clock (aware UTC datetimes): periods, limit resets and pruning
    follow it. ``app.state.stats`` is the :class:`StatsService`, ``app.state.router`` the
    :class:`~wa_common.bus.router.Router` that answers its queries.
    """
    settings = settings or StatsSettings()
    runtime = Runtime(SERVICE, settings)
    app = create_app(runtime, title="Stats service (internal)")

    engine = create_engine(settings.database_url)
    app.state.engine = engine
    assert runtime.bus is not None
    bus = runtime.bus
    service = StatsService(
        StatsRepository(engine),
        bus.publish_event,
        now=now,
        dedup_retention=timedelta(days=settings.dedup_retention_days),
    )
    app.state.stats = service
    router = stats_router(service.queries, database_url=settings.database_url)
    app.state.router = router
    consumers = StatsConsumers(bus, service.counting, router)

    async def database_ready() -> bool:
        return await ping(engine)

    maintenance: list[asyncio.Task[None]] = []

    async def start() -> None:
        await consumers.start()
        task = runtime.tasks.spawn(
            service.maintenance_loop(settings.maintenance_interval_s), name="stats-maintenance"
        )
        maintenance.append(task)

    async def stop_work() -> None:
        """Before the store closes: stop the maintenance loop, then the consumers (waiting for
        in-flight handlers)."""
        for task in maintenance:
            task.cancel()
        await asyncio.gather(*maintenance, return_exceptions=True)
        await consumers.stop(settings.shutdown_timeout_s)

    runtime.health.add("database", database_ready)
    runtime.on_stop(engine.dispose)
    runtime.on_start(start)
    runtime.on_stop(stop_work)
    return app


def main() -> None:
    settings = StatsSettings()
    run_cli(
        SERVICE,
        serve=lambda: serve(build_app(settings), settings, service=SERVICE),
        migrate=lambda: upgrade("wa_stats", settings.database_url),
    )
