"""Live events for browsers: one gateway-wide consumer of ``wa.events`` fanned out to the
server-sent-event streams of ``GET /api/events/stream`` (``api/live.py``).

The hub binds an exclusive, auto-deleted queue (``wa.live.gateway-stream.<id>``, DESIGN.md
"short-lived exclusive queues for live streams") only while at least one client listens, and
unbinds it when the last one leaves, so a gateway nobody watches costs the broker nothing.
Live events are best effort by design: nothing is replayed after a reconnection (a client
re-reads the state it shows over REST when its stream (re)opens).

Each subscriber has a bounded queue (``GATEWAY_STREAM_QUEUE_SIZE``); a client too slow to drain it
is cut off (its stream ends with an ``overflow`` frame and the browser reconnects) instead of
making the gateway buffer without bound.

What a browser receives (:func:`browser_view`): ``{"id", "type", "instanceId", "timestamp"
(ISO 8601 UTC), "data"}``, where ``data`` is the webhook payload for webhook-visible types, and a
reduced view for the internal ones (``instance.created``/``instance.updated`` carry webhook
secrets and headers, which never leave the gateway this way); ``qr_received`` also has
``expiresAt`` (ISO 8601 UTC), when the code stops working.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from wa_common.bus import EXCHANGE_EVENTS, Consumer, Delivery
from wa_common.logs import get_logger
from wa_common.runtime import Runtime
from wa_common.schemas import Event, EventType

log = get_logger(__name__)

# Seconds the broker consumer outlives its last client.
LINGER_S = 10.0

LIVE_STREAMS = Gauge("wa_gateway_live_streams", "Open live-event streams (GET /api/events/stream).")

# Event types a dashboard shows, with the fields of ``data`` it may see (None: all of them).
STREAMED: dict[str, tuple[str, ...] | None] = {
    EventType.CONNECTED: None,
    EventType.DISCONNECTED: None,
    EventType.QR_RECEIVED: None,
    EventType.MESSAGE_RECEIVED: None,
    EventType.MESSAGE_SENT: None,
    EventType.MESSAGE_STATUS: None,
    EventType.LIMIT_EXCEEDED: None,
    EventType.WEBHOOK_UPDATED: None,
    EventType.WEBHOOK_DELIVERED: None,
    EventType.WEBHOOK_FAILED: None,
    EventType.INSTANCE_CREATED: ("instanceId", "name"),
    EventType.INSTANCE_UPDATED: ("instanceId", "name"),
    EventType.INSTANCE_DELETED: ("instanceId",),
}


def browser_view(event: Event) -> dict[str, Any]:
    """The JSON object sent to a browser for ``event`` (see the module docstring)."""
    allowed = STREAMED.get(event.type)
    data = event.data if allowed is None else {k: event.data[k] for k in allowed if k in event.data}
    view = {
        "id": event.id,
        "type": event.type,
        "instanceId": event.instance_id,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    if event.type == EventType.QR_RECEIVED and isinstance(event.meta.get("expiresAt"), str):
        view["expiresAt"] = event.meta["expiresAt"]  # when WhatsApp stops accepting the code
    return view


@dataclass(eq=False)
class Subscription:
    """One client's filter and its bounded queue of events (``None`` ends the stream: after an
    overflow, or at shutdown)."""

    user_id: str
    all_users: bool = False
    instance_id: str | None = None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def wants(self, event: Event) -> bool:
        if not self.all_users and event.user_id != self.user_id:
            return False
        return self.instance_id is None or event.instance_id == self.instance_id

    def offer(self, event: Event) -> bool:
        """Queue ``event``; ``False`` (and an overflow mark) when the client is too slow."""
        if self.queue.qsize() >= (self.queue.maxsize or 1 << 30) - 1:
            self.overflowed = True
            self.end()
            return False
        self.queue.put_nowait(event)
        return True

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class LiveHub:
    """Fan-out of ``wa.events`` to in-process subscribers (one per open SSE stream).

    ``subscribe`` starts the broker consumer on demand; ``unsubscribe`` stops it once nobody has
    listened for ``linger_s`` seconds (a page reload does not tear it down and rebuild it).
    Raises ``RuntimeError`` from ``subscribe`` when the gateway has no bus connection or is
    shutting down.
    """

    def __init__(self, runtime: Runtime, *, queue_size: int, linger_s: float = LINGER_S) -> None:
        self._runtime = runtime
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._consumer: Consumer | None = None
        self._lock = asyncio.Lock()
        self._linger_s = linger_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def subscribe(
        self, user_id: str, *, all_users: bool = False, instance_id: str | None = None
    ) -> Subscription:
        sub = Subscription(user_id, all_users, instance_id, asyncio.Queue(maxsize=self._queue_size))
        async with self._lock:
            if self.closed:
                raise RuntimeError("the gateway is shutting down")
            if self._consumer is None:
                bus = self._runtime.bus
                if bus is None:
                    raise RuntimeError("no broker connection")
                bindings = [(EXCHANGE_EVENTS, f"{t}.#") for t in STREAMED]
                self._consumer = await bus.consume_transient(
                    bindings, self._on_event, name_prefix="wa.live.gateway-stream"
                )
            self._subs.add(sub)
            self._changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; the broker consumer stops ``LINGER_S`` after the last client left.

        Synchronous on purpose: it runs in the ``finally`` of a stream the server is cancelling
        (client gone), where anyio's cancellation would interrupt any ``await`` and leave the
        consumer running (the next subscriber would then add a second one).
        """
        self._subs.discard(sub)
        self._changed()
        if not self._subs and self._consumer is not None:
            task = asyncio.get_running_loop().create_task(self._stop_when_idle())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _stop_when_idle(self) -> None:
        await asyncio.sleep(self._linger_s)
        async with self._lock:
            if self._subs or self._consumer is None:
                return
            consumer, self._consumer = self._consumer, None
        try:
            bus = self._runtime.bus
            await (bus.cancel_consumer(consumer, 5.0) if bus is not None else consumer.cancel(5.0))
        except Exception as exc:  # the connection may be gone; the queue dies with it
            log.info("live consumer cancel failed", error=str(exc))

    def close(self) -> None:
        """End every open stream (at SIGTERM, so uvicorn need not wait for them)."""
        self.closed = True
        for sub in list(self._subs):
            sub.end()

    def _changed(self) -> None:
        LIVE_STREAMS.set(len(self._subs))

    async def _on_event(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except ValueError:
            log.warning("ignored a malformed event", routing_key=delivery.routing_key)
            return
        for sub in list(self._subs):
            if sub.wants(event) and not sub.offer(event):
                self._subs.discard(sub)
                self._changed()
                log.info("live stream cut off: client too slow", user_id=sub.user_id)
