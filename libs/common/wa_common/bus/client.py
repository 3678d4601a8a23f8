"""The bus client: one robust connection, confirmed persistent publishing, managed consumers.

Guarantees (DESIGN.md, "The bus"):
- ``aio_pika.connect_robust``: the connection, channels, queues and consumers are restored after
  a broker restart or a connection closed from the broker side.
- Publishing waits for the broker's confirm; an unroutable message (``mandatory``) or a nack
  raises :class:`PublishError`. Transient failures (connection lost mid-publish) are retried with
  tenacity until ``publish_timeout_s``. Publishing is at-least-once: consumers deduplicate on ids.
- Consumers ack only after the handler returned. A handler exception nacks with requeue (the
  quorum queue counts the delivery; past ``x-delivery-limit`` the message is dead-lettered to
  ``<queue>.dead``); :class:`Reject` dead-letters at once. Prefetch bounds in-flight messages.
- Dead-letter queues are bounded (:class:`~wa_common.bus.topology.DeadLetterLimits`), dropping
  their oldest message when full; a bus that declared the topology also counts those drops
  (``wa_bus_dead_letters_dropped_total``, :mod:`wa_common.bus.dead_letters`).
- :meth:`Consumer.cancel` stops new deliveries and waits for in-flight handlers to finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)

from wa_common.bus import batches
from wa_common.bus.batches import BATCH_CONTENT_TYPE, Part
from wa_common.bus.dead_letters import count_drop
from wa_common.bus.topology import (
    DROPPED_QUEUE,
    EXCHANGE_DLX,
    EXCHANGE_EVENTS,
    DeadLetterLimits,
    QueueSpec,
    all_queue_specs,
    declare_dead_letter_queues,
    declare_queue,
    declare_topology,
    legacy_remedy,
)
from wa_common.logs import CORRELATION_HEADER, correlation_scope, get_correlation_id, get_logger
from wa_common.metrics import (
    BUS_ACKED,
    BUS_CONSUMED,
    BUS_HANDLER_SECONDS,
    BUS_NACKED,
    BUS_PUBLISHED,
    queue_label,
)
from wa_common.schemas import Event

log = get_logger(__name__)

# Failures worth retrying: the connection or channel is down for the moment. DeliveryError (also an
# AMQPError) is a verdict of the broker and is never retried.
TRANSIENT = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)


class PublishError(RuntimeError):
    """The broker refused a message: unroutable with ``mandatory`` set, or nacked."""


class Reject(Exception):
    """Raised by a handler for a message that can never succeed (malformed, unknown version).

    The message is dead-lettered at once instead of being redelivered up to the limit.
    """


@dataclass(frozen=True)
class Delivery:
    """One message handed to a handler; for an event of a batch (:mod:`.batches`), that event:
    its own body, routing key and id, the batch's headers."""

    message: AbstractIncomingMessage
    queue: str
    part: Part | None = None

    @property
    def body(self) -> bytes:
        return self.part.body if self.part is not None else self.message.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.message.headers or {}

    @property
    def routing_key(self) -> str:
        return self.part.routing_key if self.part is not None else self.message.routing_key or ""

    @property
    def message_id(self) -> str | None:
        return self.part.id if self.part is not None else self.message.message_id

    @property
    def reply_to(self) -> str | None:
        return self.message.reply_to

    @property
    def rpc_correlation_id(self) -> str | None:
        """The AMQP ``correlation_id`` property (pairs a reply with its request)."""
        return self.message.correlation_id

    @property
    def correlation_id(self) -> str | None:
        """The tracing correlation id from the ``x-correlation-id`` header."""
        value = self.headers.get(CORRELATION_HEADER)
        return value.decode() if isinstance(value, bytes) else (str(value) if value else None)

    @property
    def delivery_count(self) -> int:
        """How many earlier deliveries of this message failed (quorum ``x-delivery-count``)."""
        try:
            return int(self.headers.get("x-delivery-count", 0) or 0)
        except (TypeError, ValueError):
            return 0


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer:
    """A running subscription of one handler to one queue, on its own channel."""

    def __init__(
        self, queue: AbstractQueue, channel: AbstractChannel, handler: Handler, *, requeue_delay_s: float
    ):
        self._queue = queue
        self._channel = channel
        self._handler = handler
        self._tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._requeue_delay_s = requeue_delay_s
        self._label = queue_label(queue.name)
        self._closed = False

    @property
    def queue_name(self) -> str:
        return self._queue.name

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def _start(self, exclusive: bool) -> None:
        self._tag = await self._queue.consume(self._on_message, no_ack=False, exclusive=exclusive)

    async def _run_batch(self, message: AbstractIncomingMessage) -> None:
        """Every event of a batch message (:mod:`.batches`) through the handler, concurrently;
        an event the handler rejects is dead-lettered alone (the others count as handled);
        any other failure raises, so the whole message is redelivered (consumers deduplicate
        on event ids)."""
        try:
            parts = batches.decode(message.body)
        except ValueError as exc:
            raise Reject("malformed event batch") from exc
        results = await asyncio.gather(
            *(self._handler(Delivery(message, self._queue.name, part)) for part in parts),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, Reject):
                await self._dead_letter(message, part, str(result))
            elif isinstance(result, BaseException) and failure is None:
                failure = result
        if failure is not None:
            raise failure

    async def _dead_letter(self, message: AbstractIncomingMessage, part: Part, reason: str) -> None:
        """One rejected event of a batch to ``wa.dlx`` with this queue's dead-letter key (as the
        broker dead-letters a whole message)."""
        log.error(
            "event of a batch rejected to dead-letter queue",
            queue=self._queue.name,
            message_id=part.id,
            reason=reason,
        )
        try:
            exchange = await self._channel.get_exchange(EXCHANGE_DLX, ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    part.body,
                    content_type="application/json",
                    message_id=part.id,
                    headers=dict(message.headers or {}),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self._queue.name,
            )
        except Exception as exc:  # an exclusive queue has no dead-letter queue: logged above
            log.warning("could not dead-letter an event of a batch", queue=self._queue.name, error=str(exc))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        delivery = Delivery(message, self._queue.name)
        BUS_CONSUMED.labels(self._label).inc()
        started = time.perf_counter()
        try:
            with correlation_scope(delivery.correlation_id):
                try:
                    if message.content_type == BATCH_CONTENT_TYPE:
                        await self._run_batch(message)
                    else:
                        await self._handler(delivery)
                except Reject as exc:
                    log.error(
                        "message rejected to dead-letter queue",
                        queue=self._queue.name,
                        message_id=delivery.message_id,
                        reason=str(exc),
                    )
                    await self._settle(message, ack=False, requeue=False)
                except asyncio.CancelledError:
                    # The channel is closing (connection lost or shutdown). Awaiting a nack here would
                    # stall aio-pika's channel recovery; the broker requeues unacked messages anyway.
                    raise
                except Exception:
                    log.exception(
                        "message handler failed; message returned to the queue",
                        queue=self._queue.name,
                        message_id=delivery.message_id,
                        delivery_count=delivery.delivery_count,
                    )
                    # A short pause so a failing dependency is not hammered by redeliveries.
                    await asyncio.sleep(min(self._requeue_delay_s * (delivery.delivery_count + 1), 5.0))
                    await self._settle(message, ack=False, requeue=True)
                else:
                    await self._settle(message, ack=True, requeue=False)
        finally:
            BUS_HANDLER_SECONDS.labels(self._label).observe(time.perf_counter() - started)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _settle(self, message: AbstractIncomingMessage, *, ack: bool, requeue: bool) -> None:
        if self._closed:
            # cancel() gave up waiting and closed the channel: the broker has already requeued
            # this delivery, and an ack now would name a delivery tag the channel no longer has.
            log.warning(
                "handler finished after its consumer closed; the broker redelivers the message",
                queue=self._queue.name,
            )
            return
        try:
            if ack:
                await message.ack()
                BUS_ACKED.labels(self._label).inc()
            else:
                await message.nack(requeue=requeue)
                BUS_NACKED.labels(self._label, str(requeue).lower()).inc()
        except Exception as exc:
            # The channel died with the message unacked: the broker redelivers it.
            log.warning(
                "could not settle message; the broker will redeliver it",
                queue=self._queue.name,
                error=str(exc),
            )

    async def cancel(self, timeout_s: float = 30.0) -> None:
        """Stop deliveries, wait up to ``timeout_s`` for in-flight handlers, close the channel."""
        if self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:
                log.warning("consumer cancel failed", queue=self._queue.name, error=str(exc))
            self._tag = None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning(
                "in-flight handlers still running at shutdown",
                queue=self._queue.name,
                in_flight=self._in_flight,
            )
        self._closed = True
        if not self._channel.is_closed:
            await self._channel.close()


class Bus:
    """One service's connection to RabbitMQ.

    ``service`` names the connection in the broker's management UI. ``shard_count``,
    ``delivery_limit`` and ``dead_letters`` must be the same in every service (they are queue
    arguments); services pass ``BUS_DEAD_LETTER_MAX_LENGTH`` / ``BUS_DEAD_LETTER_MAX_BYTES`` from
    their settings (``Runtime``), other clients get the defaults. ``event_batch_max``: most
    events per message in :meth:`publish_events` (``BUS_EVENT_BATCH_MAX``; 1 publishes the
    version-1 format only, see :mod:`.batches`).
    """

    def __init__(
        self,
        url: str,
        *,
        service: str,
        shard_count: int = 64,
        prefetch: int = 32,
        delivery_limit: int = 5,
        publish_timeout_s: float = 10.0,
        requeue_delay_s: float = 0.2,
        dead_letters: DeadLetterLimits | None = None,
        event_batch_max: int = 64,
    ) -> None:
        self.url = url
        self.event_batch_max = max(1, event_batch_max)
        self.service = service
        self.shard_count = shard_count
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.publish_timeout_s = publish_timeout_s
        self.requeue_delay_s = requeue_delay_s
        self.dead_letters = dead_letters or DeadLetterLimits()
        # Queues whose dead-letter queue this bus declared; those found with other arguments.
        self._dead_declared: set[str] = set()
        self.legacy_dead_letter_queues: list[str] = []
        self._drop_watcher: Consumer | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumers: list[Consumer] = []

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("bus is not connected; call connect() first")
        return self._connection

    async def connect(
        self, *, declare: bool = True, timeout_s: float = 10.0, count_dead_letter_drops: bool | None = None
    ) -> None:
        """Connect (robustly) and, with ``declare``, declare the whole topology.

        ``count_dead_letter_drops`` (default: ``declare``, i.e. in every service) starts
        :meth:`count_dead_letter_drops`. Raises ``aio_pika``/``ConnectionError`` exceptions when
        the broker cannot be reached within ``timeout_s``.
        """
        self._connection = await aio_pika.connect_robust(
            self.url, timeout=timeout_s, client_properties={"connection_name": self.service}
        )
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        if declare:
            legacy = await declare_topology(
                self._connection,
                self._channel,
                shard_count=self.shard_count,
                delivery_limit=self.delivery_limit,
                dead_letters=self.dead_letters,
            )
            self._dead_declared.update(spec.name for spec in all_queue_specs(self.shard_count))
            self._report_legacy(legacy)
        log.info("bus connected", service=self.service)
        if count_dead_letter_drops if count_dead_letter_drops is not None else declare:
            await self.count_dead_letter_drops()

    def _report_legacy(self, legacy: list[str]) -> None:
        """Log (as one error) the dead-letter queues that exist with other arguments."""
        new = [name for name in legacy if name not in self.legacy_dead_letter_queues]
        if not new:
            return
        self.legacy_dead_letter_queues.extend(new)
        log.error(
            "dead-letter queues exist with other arguments than this service declares (an older "
            "version's unbounded queues, or other BUS_DEAD_LETTER_* values): they are used as they "
            "are, so they may not be bounded and what they drop may not be counted",
            queues=new,
            count=len(new),
            max_length=self.dead_letters.max_length,
            max_bytes=self.dead_letters.max_bytes,
            remedy=legacy_remedy(self.dead_letters),
        )

    async def count_dead_letter_drops(self) -> Consumer:
        """Consume ``wa.dead.dropped`` (idempotent): each dead letter a full dead-letter queue
        dropped is counted in ``wa_bus_dead_letters_dropped_total`` by this process. Every
        service does it; the broker hands each drop notice to one of them."""
        if self._drop_watcher is None:

            async def on_drop(delivery: Delivery) -> None:
                count_drop(delivery.headers)

            self._drop_watcher = await self.consume(DROPPED_QUEUE, on_drop, prefetch=64)
        return self._drop_watcher

    async def is_healthy(self) -> bool:
        """True while the connection and the publishing channel are open."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _exchange(self, name: str) -> AbstractExchange:
        assert self._channel is not None, "bus is not connected"
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration_s: float | None = None,
        rpc_correlation_id: str | None = None,
        reply_to: str | None = None,
        persistent: bool = True,
        mandatory: bool = True,
        content_type: str = "application/json",
    ) -> None:
        """Publish and wait for the broker's confirm.

        ``expiration_s`` becomes the per-message TTL (the broker drops it unconsumed after that).
        Raises :class:`PublishError` if the message is unroutable or nacked, or if the broker
        stays unreachable for ``publish_timeout_s`` seconds.
        """
        all_headers: dict[str, Any] = dict(headers or {})
        cid = get_correlation_id()
        if cid and CORRELATION_HEADER not in all_headers:
            all_headers[CORRELATION_HEADER] = cid
        message = aio_pika.Message(
            body,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            if persistent
            else aio_pika.DeliveryMode.NOT_PERSISTENT,
            message_id=message_id,
            headers=all_headers,
            expiration=expiration_s,
            correlation_id=rpc_correlation_id,
            reply_to=reply_to,
            app_id=self.service,
        )
        label = exchange or "(default)"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.publish_timeout_s),
                wait=wait_exponential(multiplier=0.05, max=1.0),
                retry=retry_if_exception_type(TRANSIENT) & retry_if_not_exception_type(DeliveryError),
                reraise=True,
            ):
                with attempt:
                    target = await self._exchange(exchange)
                    await target.publish(
                        message, routing_key=routing_key, mandatory=mandatory, timeout=self.publish_timeout_s
                    )
        except DeliveryError as exc:
            outcome = "returned" if exc.message is not None else "nacked"
            BUS_PUBLISHED.labels(label, outcome).inc()
            raise PublishError(f"broker {outcome} message to {label!r} with key {routing_key!r}") from exc
        except TRANSIENT as exc:
            BUS_PUBLISHED.labels(label, "error").inc()
            raise PublishError(f"could not publish to {label!r}: {type(exc).__name__}: {exc}") from exc
        BUS_PUBLISHED.labels(label, "confirmed").inc()

    async def publish_event(self, event: Event) -> None:
        """Publish ``event`` on ``wa.events`` with routing key ``<type>.<instance>`` (confirmed).

        Not mandatory: an event nobody subscribes to is not an error.
        """
        await self.publish(
            EXCHANGE_EVENTS,
            event.routing_key,
            event.to_bytes(),
            message_id=event.id,
            mandatory=False,
            headers={"x-event-type": event.type},
        )

    async def publish_events(self, events: list[Event]) -> list[BaseException | None]:
        """Publish ``events`` in as few confirmed messages as :mod:`.batches` allows (one per
        type, at most ``event_batch_max`` each; a lone event in the version-1 format), the
        messages concurrently. Returns, per event, ``None`` once confirmed or the
        :class:`PublishError` of its message (never raises)."""
        outcome: dict[str, BaseException | None] = {}

        async def one(group: list[Event]) -> None:
            try:
                if len(group) == 1:
                    await self.publish_event(group[0])
                else:
                    await self.publish(
                        EXCHANGE_EVENTS,
                        f"{group[0].type}.batch",
                        batches.encode(group),
                        message_id=f"{group[0].id}+{len(group)}",
                        mandatory=False,
                        content_type=BATCH_CONTENT_TYPE,
                        headers={batches.TYPE_HEADER: group[0].type, batches.COUNT_HEADER: len(group)},
                    )
                error: BaseException | None = None
            except Exception as exc:
                error = exc
            for event in group:
                outcome[event.id] = error

        await asyncio.gather(*(one(g) for g in batches.by_type(events, self.event_batch_max)))
        return [outcome[e.id] for e in events]

    async def consume(
        self,
        queue: str | QueueSpec,
        handler: Handler,
        *,
        prefetch: int | None = None,
        exclusive: bool = False,
    ) -> Consumer:
        """Start consuming ``queue`` (a name of an existing queue, or a spec to declare first)."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        # Queues must come from declare_queue on this (robust) channel: only those are re-declared
        # and re-consumed by aio-pika after a reconnect.
        if isinstance(queue, QueueSpec):
            if queue.name not in self._dead_declared:
                legacy = await declare_dead_letter_queues(self.connection, [queue.name], self.dead_letters)
                self._dead_declared.add(queue.name)
                self._report_legacy(legacy)
            amqp_queue = await declare_queue(channel, queue, self.delivery_limit)
        else:
            amqp_queue = await channel.declare_queue(queue, passive=True)
        consumer = Consumer(amqp_queue, channel, handler, requeue_delay_s=self.requeue_delay_s)
        await consumer._start(exclusive)
        self._consumers.append(consumer)
        return consumer

    async def consume_transient(
        self,
        bindings: list[tuple[str, str]],
        handler: Handler,
        *,
        name_prefix: str,
        prefetch: int | None = None,
    ) -> Consumer:
        """Consume a new exclusive, auto-deleted queue bound to ``bindings`` (live streams, caches).

        Such a queue lives as long as this connection; messages are not kept across restarts.
        """
        from wa_common.ids import new_id

        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        amqp_queue = await channel.declare_queue(
            f"{name_prefix}.{new_id()}", durable=False, exclusive=True, auto_delete=True
        )
        for exchange_name, key in bindings:
            await amqp_queue.bind(await channel.get_exchange(exchange_name, ensure=False), routing_key=key)
        consumer = Consumer(amqp_queue, channel, handler, requeue_delay_s=self.requeue_delay_s)
        await consumer._start(False)
        self._consumers.append(consumer)
        return consumer

    async def cancel_consumer(self, consumer: Consumer, timeout_s: float = 30.0) -> None:
        """Cancel one consumer before the connection closes (e.g. a live stream nobody reads any
        more) and forget it; raises what :meth:`Consumer.cancel` raises."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        await consumer.cancel(timeout_s)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Cancel every consumer (waiting for in-flight handlers), then close the connection."""
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(c.cancel(timeout_s) for c in consumers), return_exceptions=True)
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = None
        self._channel = None
        self._drop_watcher = None
        self._exchanges.clear()
