"""What the stats tests share: builders of the events stats counts, the service without the bus
(:class:`Local`) and on the real RabbitMQ (:class:`Running`); their fixtures are in
``conftest.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from wa_common.bus import EXCHANGE_COMMANDS, STATS_QUERY_QUEUE, Bus, RpcClient
from wa_common.bus.router import Router
from wa_common.clock import ManualClock, utcnow
from wa_common.ids import new_id
from wa_common.schemas import Caller, Event, EventType, Query, Reply
from wa_common.schemas.events import (
    InstanceSnapshot,
    MessageReceivedData,
    MessageSentData,
    WebhookDeliveredData,
)
from wa_common.schemas.wire import iso_ms
from wa_stats.service import StatsService

ADMIN = Caller(user_id="admin-test", role="admin")
PEER = "79001234567@s.whatsapp.net"


# --- events -----------------------------------------------------------------------------------


def message(
    kind: str, user: str, instance: str, at: datetime | None = None, *, media: int | None = None
) -> Event:
    """A ``message_sent`` / ``message_received`` as a session worker publishes it; ``media``:
    its size in bytes (``None``: a text)."""
    at = at or utcnow()
    fields: dict[str, Any] = {
        "instance_id": instance,
        "message_id": new_id(),
        "body": "hi",
        "type": "text" if media is None else "image",
        "timestamp": int(at.timestamp()),
        "has_media": media is not None,
    }
    sent = kind == EventType.MESSAGE_SENT
    data = MessageSentData(to=PEER, **fields) if sent else MessageReceivedData(from_=PEER, **fields)
    meta = {"mediaSize": media, "mimeType": "image/png"} if media is not None else {}
    return Event(type=kind, instance_id=instance, user_id=user, occurred_at=at, data=data.dump(), meta=meta)


def created(
    user: str, instance: str, name: str, at: datetime | None = None, kind: str = EventType.INSTANCE_CREATED
) -> Event:
    """An ``instance.created`` (or ``kind``) snapshot."""
    at = at or utcnow()
    data = InstanceSnapshot(instance_id=instance, user_id=user, name=name, updated_at=iso_ms(at))
    return Event(type=kind, instance_id=instance, user_id=user, occurred_at=at, data=data.dump())


def api_calls(counts: list[Any], *, day: date | None = None, at: datetime | None = None) -> Event:
    """A ``usage.api_calls`` batch; a ``(user, instance, count)`` tuple is one item, anything
    else goes into the batch as it is."""
    at = at or utcnow()
    items = [
        {"userId": c[0], "instanceId": c[1], "count": c[2]} if isinstance(c, tuple) else c for c in counts
    ]
    day = day or at.date()
    return Event(
        type=EventType.API_USAGE,
        occurred_at=at,
        data={"gateway": "gw-test", "day": str(day), "counts": items},
    )


@dataclass(frozen=True)
class Seed:
    """Two instances of ``user`` with usage spread over days (see :func:`seeded_usage`)."""

    user: str
    other: str
    a: str
    b: str
    last_month: datetime
    events: list[Event]


def seeded_usage(now: datetime) -> Seed:
    """Events of ``user``'s instances ``a`` ("Primary") and ``b`` ("Second"), created 60 days
    before ``now``: on ``a`` today two sends (one with 1000 bytes of media), a receipt (500 bytes
    of media), 7 API calls and a webhook; on ``b`` a send yesterday; a receipt on ``a`` 40 days
    ago; 3 API calls of ``user`` and 2 of ``other`` without an instance; the last event is of a
    type stats does not count."""
    user, other = f"u{new_id()}", f"u{new_id()}"
    a, b = new_id(), new_id()
    last_month = now - timedelta(days=40)
    events = [
        created(user, a, "Primary", now - timedelta(days=60)),
        created(user, b, "Second", now - timedelta(days=60)),
        message(EventType.MESSAGE_SENT, user, a, now),
        message(EventType.MESSAGE_SENT, user, a, now, media=1000),
        message(EventType.MESSAGE_SENT, user, b, now - timedelta(days=1)),
        message(EventType.MESSAGE_RECEIVED, user, a, now, media=500),
        message(EventType.MESSAGE_RECEIVED, user, a, last_month),
        api_calls([(user, a, 7), (user, None, 3), (other, None, 2)], at=now),
        Event(
            type=EventType.WEBHOOK_DELIVERED,
            instance_id=a,
            user_id=user,
            occurred_at=now,
            data=WebhookDeliveredData(
                instance_id=a, delivery_id=new_id(), event_id=new_id(), event="x", attempts=1
            ).dump(),
        ),
        Event(type=EventType.MESSAGE_STATUS, instance_id=a, user_id=user, data={}),
    ]
    return Seed(user, other, a, b, last_month, events)


def counters(
    sent: int = 0,
    received: int = 0,
    media_sent: int = 0,
    media_received: int = 0,
    size: int = 0,
    api: int = 0,
    webhooks: int = 0,
) -> dict[str, int]:
    """The usage counters of a reply, in wire names."""
    return {
        "messagesSent": sent,
        "messagesReceived": received,
        "mediaSent": media_sent,
        "mediaReceived": media_received,
        "totalMediaSize": size,
        "apiCalls": api,
        "webhookSent": webhooks,
    }


def query(name: str, caller: Caller | None, instance_id: str | None, payload: dict[str, Any]) -> Query:
    return Query(name=name, caller=caller, instance_id=instance_id, payload=payload)


# --- the service without the bus ----------------------------------------------------------------


@dataclass
class Publisher:
    """The bus seam of the service: what it published, and a switch to make publishing fail."""

    published: list[Event] = field(default_factory=list)
    down: bool = False

    async def __call__(self, event: Event) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.published.append(event)


@dataclass
class Local:
    service: StatsService
    router: Router
    clock: ManualClock
    bus: Publisher

    @property
    def published(self) -> list[Event]:
        return self.bus.published

    async def handle(self, event: Event) -> str:
        return await self.service.counting.handle_event(event)

    async def ask(
        self, name: str, caller: Caller | None, instance_id: str | None = None, **payload: Any
    ) -> Reply:
        reply = await self.router.dispatch(query(name, caller, instance_id, payload))
        assert reply is not None, "a fresh query was dropped as expired"
        return reply


# --- the service on the real RabbitMQ -----------------------------------------------------------


async def ask_bus(
    rpc: RpcClient, name: str, caller: Caller | None, instance_id: str | None = None, **payload: Any
) -> Reply:
    """A stats query over the bus, as the gateway asks it."""
    return await rpc.call(EXCHANGE_COMMANDS, STATS_QUERY_QUEUE, query(name, caller, instance_id, payload))


@dataclass
class Running:
    service: StatsService
    bus: Bus
    rpc: RpcClient

    async def ask(
        self, name: str, caller: Caller | None, instance_id: str | None = None, **payload: Any
    ) -> Reply:
        return await ask_bus(self.rpc, name, caller, instance_id, **payload)

    async def depth(self, queue: str) -> int:
        channel = await self.bus.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await channel.close()
