"""Entry point: ``python -m wa_webhooks [serve|migrate]``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from wa_common.bus import EXCHANGE_EVENTS, SERVICE_QUEUES, WEBHOOKS_QUERY_QUEUE
from wa_common.cli import run_cli
from wa_common.db import create_engine, ping
from wa_common.logs import get_logger
from wa_common.migrations import upgrade
from wa_common.netguard import Resolver
from wa_common.runtime import Runtime, create_app, serve
from wa_webhooks.api import SERVICE, WebhooksApi
from wa_webhooks.consumers import EventConsumer, ReplicaFollower
from wa_webhooks.housekeeping import run_gauges, run_retention
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import Repository
from wa_webhooks.settings import WebhooksSettings

log = get_logger(__name__)

EVENTS_PREFETCH = 256  # events in flight: what one group-commit window of the outbox can hold


def build_app(settings: WebhooksSettings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    """The webhooks service as an ASGI app (started and stopped by its lifespan).

    ``resolver`` replaces DNS in the SSRF guard (tests only).
    """
    settings = settings or WebhooksSettings()
    runtime = Runtime(SERVICE, settings)
    app = create_app(runtime, title="Webhook dispatcher (internal)")

    engine = create_engine(settings.database_url)
    app.state.engine = engine
    repo = Repository(engine)
    bus = runtime.bus
    assert bus is not None
    dispatcher = Dispatcher(
        repo, settings, publish=bus.publish_event, spawn=runtime.tasks.spawn, resolver=resolver
    )
    app.state.dispatcher = dispatcher
    api = WebhooksApi(repo, dispatcher, database_url=settings.database_url)

    async def database_ready() -> bool:
        return await ping(engine)

    runtime.health.add("database", database_ready)

    @runtime.on_start
    async def start() -> None:
        if not settings.private_targets_allowed:
            log.info("webhook targets restricted to public addresses")
        else:
            log.warning("webhook targets may be private/loopback addresses (development setting)")
        # Every process follows instance.* events for its in-memory settings replica (the durable
        # queue gives each event to one replica only); subscribed before the replica is loaded so
        # nothing falls between. Events missed while the connection was down: reload.
        follower = await bus.consume_transient(
            [(EXCHANGE_EVENTS, key) for key in ReplicaFollower.BINDING_KEYS],
            ReplicaFollower(dispatcher.replica),
            name_prefix="wa.webhooks.replica",
        )

        async def reload_replica() -> None:
            try:
                await dispatcher.replica.load()
            except Exception as exc:
                log.warning("webhook settings replica not reloaded", error=str(exc))

        bus.connection.reconnect_callbacks.add(
            lambda *_: runtime.tasks.spawn(reload_replica(), name="webhook-replica-reload")
        )
        runtime.tasks.spawn(dispatcher.run(), name="webhook-scheduler")
        runtime.tasks.spawn(run_gauges(repo.deliveries), name="webhook-outbox-gauges")
        runtime.tasks.spawn(run_retention(repo.retention, settings.retention_days), name="webhook-retention")
        consumers = [
            follower,
            await bus.consume(SERVICE_QUEUES[SERVICE], EventConsumer(dispatcher), prefetch=EVENTS_PREFETCH),
            await bus.consume(WEBHOOKS_QUERY_QUEUE, api.router.consumer(bus)),
        ]

        async def stop_consuming() -> None:
            # Registered last, so it runs first: no new events while the outbox winds down.
            await asyncio.gather(*(c.cancel(settings.shutdown_timeout_s) for c in consumers))

        runtime.on_stop(stop_consuming)

    runtime.on_stop(engine.dispose)
    runtime.on_stop(dispatcher.close)
    return app


def main() -> None:
    settings = WebhooksSettings()
    run_cli(
        SERVICE,
        serve=lambda: serve(build_app(settings), settings, service=SERVICE),
        migrate=lambda: upgrade("wa_webhooks", settings.database_url),
    )
