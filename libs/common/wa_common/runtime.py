"""The life of one service process: settings, logging, bus, background tasks, health, HTTP.

Every service — API services and bus-only workers alike — is a FastAPI app run by uvicorn, so all
of them expose ``/healthz``, ``/readyz`` and ``/metrics`` the same way. uvicorn owns the signals:
on SIGTERM/SIGINT it stops accepting HTTP, finishes in-flight requests, then runs the lifespan
shutdown, where :class:`Runtime` runs the service's stop hooks in reverse order (consumers are
cancelled first and their in-flight handlers finish), cancels background tasks and closes the
bus. A failing start hook exits the process with a non-zero status.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from aio_pika.exceptions import AMQPError
from fastapi import FastAPI
from starlette.middleware import Middleware
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from wa_common import __version__
from wa_common.bus import Bus, DeadLetterLimits, RpcClient
from wa_common.health import HealthChecks, health_router
from wa_common.http import ObservabilityMiddleware, SafeErrorsMiddleware
from wa_common.logs import configure_logging, get_logger
from wa_common.metrics import BUILD_INFO
from wa_common.settings import ServiceSettings
from wa_common.tasks import TaskSupervisor

Hook = Callable[[], Awaitable[Any]]

log = get_logger(__name__)


class Runtime:
    """Shared lifecycle of a service. Register hooks, then build the app with :func:`create_app`.

    ``uses_bus``: connect to RabbitMQ at start (declaring the topology) and add a ``rabbitmq``
    readiness check. ``rpc``: also start a request/reply client (``runtime.rpc``).
    """

    def __init__(self, name: str, settings: ServiceSettings, *, uses_bus: bool = True, rpc: bool = False):
        self.name = name
        self.settings = settings
        self.health = HealthChecks()
        self.tasks = TaskSupervisor()
        self.bus: Bus | None = (
            Bus(
                settings.amqp_url,
                service=name,
                shard_count=settings.shard_count,
                prefetch=settings.bus_prefetch,
                delivery_limit=settings.bus_delivery_limit,
                event_batch_max=settings.bus_event_batch_max,
                dead_letters=DeadLetterLimits(
                    settings.bus_dead_letter_max_length, settings.bus_dead_letter_max_bytes
                ),
            )
            if uses_bus
            else None
        )
        self._want_rpc = rpc
        self.rpc: RpcClient | None = None
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._exit_callbacks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_exit_requested(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) as soon as SIGTERM/SIGINT arrives, before uvicorn
        waits for open connections to finish: long-lived responses (event streams) end there,
        so they do not hold the shutdown for ``SHUTDOWN_TIMEOUT_S``."""
        self._exit_callbacks.append(callback)

    def exit_requested(self) -> None:
        """Run the :meth:`on_exit_requested` callbacks; safe to call from a signal handler."""
        if self._loop is None or self._loop.is_closed():
            return
        for callback in self._exit_callbacks:
            self._loop.call_soon_threadsafe(callback)

    def on_start(self, hook: Hook) -> Hook:
        """Run ``hook`` at start, after the bus is connected (in registration order)."""
        self._start_hooks.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``hook`` at shutdown, before the bus closes (in reverse registration order)."""
        self._stop_hooks.append(hook)
        return hook

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        BUILD_INFO.labels(self.name, __version__).set(1)
        if self.bus is not None:
            await self._connect_bus(self.bus)
            self.health.add("rabbitmq", self.bus.is_healthy)
            if self._want_rpc:
                self.rpc = RpcClient(self.bus)
                await self.rpc.start()
        for hook in self._start_hooks:
            await hook()
        log.info(
            "service started",
            host=self.settings.host,
            port=self.settings.port,
            profile=self.settings.profile.value,
        )

    async def _connect_bus(self, bus: Bus) -> None:
        """Connect, retrying with backoff until ``BUS_CONNECT_TIMEOUT_S`` (a broker that is still
        starting, or busy, is waited for; then the start fails with the last error)."""
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self.settings.bus_connect_timeout_s),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type((AMQPError, OSError, TimeoutError)),
            before_sleep=lambda state: log.warning(
                "RabbitMQ not reachable yet; retrying", error=str(state.outcome and state.outcome.exception())
            ),
            reraise=True,
        ):
            with attempt:
                await bus.connect(timeout_s=min(10.0, self.settings.bus_connect_timeout_s))

    async def stop(self) -> None:
        log.info("service stopping")
        for hook in reversed(self._stop_hooks):
            try:
                await hook()
            except Exception:
                log.exception("stop hook failed", hook=getattr(hook, "__name__", repr(hook)))
        await self.tasks.shutdown()
        if self.bus is not None:
            await self.bus.close(timeout_s=self.settings.shutdown_timeout_s)
        log.info("service stopped")

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        try:
            await self.start()
        except BaseException:
            # Release what did start (connections, engines, threads of SQLite drivers), or the
            # process could linger after uvicorn gives up on the startup.
            log.exception("service failed to start")
            await self.stop()
            raise
        try:
            yield
        finally:
            await self.stop()


def create_app(
    runtime: Runtime, *, title: str, description: str = "", docs: bool = True, **kwargs: Any
) -> FastAPI:
    """A FastAPI app wired to ``runtime``: lifespan, health/metrics routes, observability
    middleware, and safe 500s for unexpected errors (``wa_common.http``)."""
    app = FastAPI(
        title=title,
        description=description,
        version=__version__,
        lifespan=runtime.lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        **kwargs,
    )
    app.state.runtime = runtime
    app.include_router(health_router(runtime.health))
    app.add_middleware(ObservabilityMiddleware)
    # Innermost: later add_middleware calls wrap outside it, so it stays in the correlation scope.
    app.user_middleware.append(Middleware(SafeErrorsMiddleware))
    return app


def serve(app: FastAPI, settings: ServiceSettings, *, service: str) -> None:
    """Run ``app`` with uvicorn on ``settings.host:settings.port`` until SIGTERM/SIGINT.

    Exits the process with status 3 when the service could not start.
    """
    configure_logging(service, settings.log_level, settings.log_format)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        server_header=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For when the peer
        # is 127.0.0.1: which proxies to believe is the gateway's decision
        # (GATEWAY_TRUSTED_PROXIES), never uvicorn's.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None:
        handle_exit = server.handle_exit

        def on_signal(sig: int, frame: FrameType | None) -> None:
            runtime.exit_requested()
            handle_exit(sig, frame)

        server.handle_exit = on_signal  # type: ignore[method-assign]
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE status: the lifespan startup raised
