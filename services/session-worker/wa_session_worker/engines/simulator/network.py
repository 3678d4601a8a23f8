"""This node on the simulated network: its queue on ``wa.sim``, the routing keys its sessions bind,
the lanes that deliver what arrives, publishing, and the network's memory of unlinked devices.

One exclusive, auto-deleted queue per node: a process that dies loses its queue, hence its
bindings, at once, and the network then treats its accounts as offline. A key bound by several
sessions of this node is bound once on the broker (counted here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity

from wa_common.bus import EXCHANGE_SIM, Bus
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import EngineError
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.simulator.session import ENGINE

log = get_logger(__name__)

REVOKED_QUEUE_PREFIX = "wa.sim.revoked."
REVOKED_TTL_MS = 30 * 24 * 3600 * 1000  # how long the network remembers an unlinked device

# (routing key, body, reply_to) of one delivery.
Handler = Callable[[str, bytes, str | None], Awaitable[None]]


class Subscriber(Protocol):
    """A session as the network sees it: its instance and the routing keys it has bound."""

    instance_id: str
    keys: set[str]


UNROUTABLE_MEMORY_S = 1.0
"""How long a routing key that came back unroutable is taken for an external contact (s)."""


class SimNetwork:
    """``bus``: a connected bus to share (else :meth:`connect` opens its own connection to
    ``amqp_url``). Each delivery goes to ``handler``, run under ``tasks``."""

    def __init__(
        self, handler: Handler, tasks: TaskSupervisor, *, amqp_url: str | None, bus: Bus | None
    ) -> None:
        self._handler = handler
        self._tasks = tasks
        self._amqp_url = amqp_url
        self._bus = bus
        self._own_bus = bus is None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._bound: dict[str, int] = {}
        self._routes: dict[str, set[str]] = {}  # routing key -> instance ids
        self._lanes: dict[str, asyncio.Queue[Callable[[], Awaitable[None]]]] = {}
        self._unroutable: dict[str, float] = {}  # routing key -> time.monotonic() it may route again

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError("simulator engine is not started")
        return self._bus

    async def connect(self, on_lost: Callable[..., None], on_reconnected: Callable[..., None]) -> str:
        """Declare ``wa.sim``, open this node's queue (bound to roll calls) and consume it;
        ``on_lost``/``on_reconnected`` follow the broker connection. Returns the queue's name."""
        if self._bus is None:
            assert self._amqp_url is not None
            self._bus = Bus(self._amqp_url, service="session-worker-sim")
            await self._bus.connect(declare=False, timeout_s=30.0)
        connection = self._bus.connection
        self._channel = await connection.channel()
        await self._channel.set_qos(prefetch_count=256)
        self._exchange = await self._channel.declare_exchange(
            EXCHANGE_SIM, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self._channel.declare_queue(
            f"wa.sim.node.{new_id()}", durable=False, exclusive=True, auto_delete=True
        )
        await self._queue.bind(self._exchange, routing_key="rollcall")
        await self._queue.consume(self._on_delivery, no_ack=True)
        connection.close_callbacks.add(on_lost)
        reconnect = getattr(connection, "reconnect_callbacks", None)
        if reconnect is not None:
            reconnect.add(on_reconnected)
        return self._queue.name

    async def close(self) -> None:
        """Leave the network: close this node's channel, and the connection if it is our own."""
        if self._channel is not None and not self._channel.is_closed:
            try:
                await self._channel.close()
            except Exception as exc:
                log.warning("simulator channel close failed", error=str(exc))
        self._channel = None
        if self._own_bus and self._bus is not None:
            await self._bus.close(timeout_s=5.0)
            self._bus = None

    # --- publishing ---------------------------------------------------------------------------

    async def publish(self, key: str, body: bytes, *, mandatory: bool) -> None:
        await self.bus.publish(EXCHANGE_SIM, key, body, persistent=False, mandatory=mandatory)

    def known_unroutable(self, key: str) -> bool:
        """Whether ``key`` (``msg.<user>``) came back unroutable less than
        :data:`UNROUTABLE_MEMORY_S` ago and is bound by no session here: a message to an external
        contact then skips the broker round trip (an account linked with that number meanwhile
        gets messages once the memory expires)."""
        until = self._unroutable.get(key)
        if until is None:
            return False
        if until < time.monotonic() or self._bound.get(key):
            del self._unroutable[key]
            return False
        return True

    def remember_unroutable(self, key: str) -> None:
        if len(self._unroutable) > 10_000:  # bounded: forget the expired ones
            now = time.monotonic()
            self._unroutable = {k: t for k, t in self._unroutable.items() if t >= now}
        self._unroutable[key] = time.monotonic() + UNROUTABLE_MEMORY_S

    async def reply(self, reply_to: str, body: bytes) -> None:
        """Answer a request straight to its ``reply_to`` queue."""
        await self.bus.publish("", reply_to, body, persistent=False, mandatory=False)

    # --- bindings -----------------------------------------------------------------------------

    async def bind(self, session: Subscriber, key: str) -> None:
        assert self._queue is not None and self._exchange is not None
        session.keys.add(key)
        self._routes.setdefault(key, set()).add(session.instance_id)
        self._bound[key] = self._bound.get(key, 0) + 1
        if self._bound[key] == 1:
            await self._queue.bind(self._exchange, routing_key=key)

    async def unbind(self, session: Subscriber, key: str) -> None:
        assert self._queue is not None and self._exchange is not None
        if key not in session.keys:
            return
        session.keys.discard(key)
        routes = self._routes.get(key)
        if routes is not None:
            routes.discard(session.instance_id)
            if not routes:
                del self._routes[key]
        self._bound[key] -= 1
        if self._bound[key] == 0:
            del self._bound[key]
            if self._channel is not None and not self._channel.is_closed:
                await self._queue.unbind(self._exchange, routing_key=key)

    def routed(self, key: str) -> Iterable[str]:
        """The instances whose sessions bound ``key``."""
        return self._routes.get(key, ())

    # --- deliveries ---------------------------------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        """Queue each delivery on the lane of its routing key: in order per key, concurrent
        across keys (a slow callback for one account does not hold up the others)."""
        key = message.routing_key or ""
        body = message.body
        reply_to = message.reply_to

        async def handle() -> None:
            await self._handler(key, body, reply_to)

        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = asyncio.Queue()
            lane.put_nowait(handle)
            self._tasks.spawn(self._run_lane(key, lane), name="sim-lane")
        else:
            lane.put_nowait(handle)

    async def _run_lane(self, key: str, lane: asyncio.Queue[Callable[[], Awaitable[None]]]) -> None:
        while not lane.empty():
            job = lane.get_nowait()
            try:
                await job()
            except Exception:
                ENGINE_ERRORS.labels(ENGINE, "handler").inc()
                log.exception("simulated network message failed", routing_key=key)
        del self._lanes[key]

    # --- unlinked devices ---------------------------------------------------------------------

    async def revoke(self, device_id: str) -> None:
        """Remember on the network that ``device_id`` is unlinked (a durable, expiring queue)."""
        assert self._channel is not None
        await self._channel.declare_queue(
            REVOKED_QUEUE_PREFIX + device_id, durable=True, arguments={"x-expires": REVOKED_TTL_MS}
        )

    async def is_revoked(self, device_id: str) -> bool:
        """Whether ``device_id`` was unlinked: a passive declare of its marker queue.

        Done on a plain aiormq channel of the connection: a robust aio-pika channel closed by the
        broker's 404 would reopen itself and leak."""
        transport = getattr(self.bus.connection, "transport", None)
        if transport is None:
            raise EngineError("the simulated network is unreachable", status=503)
        channel = await transport.connection.channel()
        try:
            await channel.queue_declare(REVOKED_QUEUE_PREFIX + device_id, passive=True)
            return True
        except ChannelNotFoundEntity:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()
