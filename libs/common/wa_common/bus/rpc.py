"""Request/reply over the bus with a deadline.

The caller publishes a :class:`~wa_common.schemas.Command` or ``Query`` with ``reply_to`` set to
its own exclusive reply queue and the request id as AMQP ``correlation_id``; the message TTL is
the time left until the deadline, so the broker drops a request nobody took in time. The callee
answers with :func:`send_reply`. A reply that does not arrive by the deadline raises
:class:`RequestTimeout` (the gateway maps it to 503), never a hang.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from wa_common.bus.client import Bus, Delivery
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.metrics import RPC_REQUESTS, RPC_SECONDS, queue_label
from wa_common.schemas import Reply, Request

log = get_logger(__name__)

DEADLINE_HEADER = "x-deadline-ms"


class RequestTimeout(TimeoutError):
    """No reply arrived before the request's deadline."""

    def __init__(self, target: str, name: str, timeout_s: float) -> None:
        super().__init__(f"no reply to {name!r} from {target!r} within {timeout_s:.1f}s")
        self.target = target
        self.name = name
        self.timeout_s = timeout_s


class RpcClient:
    """Sends requests and matches replies, on one exclusive reply queue per process."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._reply_queue: str | None = None

    async def start(self) -> None:
        channel = await self._bus.connection.channel()
        queue = await channel.declare_queue(
            f"wa.reply.{self._bus.service}.{new_id()}", durable=False, exclusive=True, auto_delete=True
        )
        await queue.consume(self._on_reply, no_ack=True)
        self._reply_queue = queue.name

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.info("late or unknown reply dropped", request_id=message.correlation_id)
            return
        try:
            future.set_result(Reply.from_bytes(message.body))
        except Exception as exc:
            future.set_exception(exc)

    async def call(self, exchange: str, routing_key: str, request: Request) -> Reply:
        """Send ``request`` and wait for its reply until ``request.deadline``.

        Raises :class:`RequestTimeout` at the deadline and
        :class:`~wa_common.bus.client.PublishError` if no queue takes the request.
        """
        if self._reply_queue is None:
            raise RuntimeError("RpcClient.start() was not called")
        timeout_s = request.remaining_s()
        target = queue_label(routing_key)
        if timeout_s <= 0:
            raise RequestTimeout(routing_key, request.name, 0.0)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        started = time.perf_counter()
        try:
            await self._bus.publish(
                exchange,
                routing_key,
                request.to_bytes(),
                message_id=request.id,
                rpc_correlation_id=request.id,
                reply_to=self._reply_queue,
                expiration_s=timeout_s,
                headers={DEADLINE_HEADER: int(request.deadline.timestamp() * 1000)},
            )
            reply = await asyncio.wait_for(future, max(request.remaining_s(), 0.001))
        except TimeoutError:
            RPC_REQUESTS.labels(target, "timeout").inc()
            raise RequestTimeout(routing_key, request.name, timeout_s) from None
        finally:
            self._pending.pop(request.id, None)
            RPC_SECONDS.labels(target).observe(time.perf_counter() - started)
        RPC_REQUESTS.labels(target, "ok" if reply.ok else "error").inc()
        return reply


async def send_reply(bus: Bus, delivery: Delivery, reply: Reply | dict[str, Any]) -> None:
    """Answer the request in ``delivery`` (no-op if it asked for no reply).

    Replies are transient and not mandatory: a caller that is gone simply never reads it.
    """
    if not delivery.reply_to:
        return
    body = reply.to_bytes() if isinstance(reply, Reply) else Reply.success(reply).to_bytes()
    await bus.publish(
        "",
        delivery.reply_to,
        body,
        rpc_correlation_id=delivery.rpc_correlation_id,
        persistent=False,
        mandatory=False,
    )
