"""The event consumers. Gateway requests (``wa.queries.webhooks``) are answered by the shared
request router (``api.WebhooksApi.router``).

:class:`EventConsumer` (``wa.events.webhooks``, which receives every event): ``instance.created``/
``instance.updated`` refresh the settings replica (newest ``updatedAt`` wins), ``instance.deleted``
tombstones it and cancels pending deliveries, webhook events go to the outbox. The handler returns
(and the message is acked) only after the store committed, so an acked event is never lost; a
store failure raises and the message is redelivered. The in-memory replica is changed before the
store (a failed store write is redelivered and applied again: harmless).

An event that can never become a webhook nor change the replica is acked from its type alone
(the ``x-event-type`` header) and, for an instance whose settings held in memory cannot want its
type, from the routing key (``<type>.<instance>``) alone: no parsing, no store work. A message
without the header is parsed and decided as before.

:class:`ReplicaFollower` (one exclusive fan-out queue per process): the ``instance.*`` events
another replica consumed, applied to this process's in-memory replica only.
"""

from __future__ import annotations

from pydantic import ValidationError

from wa_common.bus import Delivery, Reject
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import WEBHOOK_EVENT_TYPES, InstanceDeletedData, InstanceSnapshot
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.replica import EndpointReplica, EndpointView

log = get_logger(__name__)

INSTANCE_EVENTS = frozenset(
    {EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED, EventType.INSTANCE_DELETED}
)
RELEVANT = WEBHOOK_EVENT_TYPES | INSTANCE_EVENTS
TYPE_HEADER = "x-event-type"


def header_type(delivery: Delivery) -> str | None:
    """The event type a publisher put in the ``x-event-type`` header, or ``None``."""
    value = delivery.headers.get(TYPE_HEADER)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def never_wanted(ep: EndpointView, event_type: str) -> bool:
    """Whether settings ``ep`` refuse every event of ``event_type``, whatever its data
    (``service.wants`` for all the data an event of that type may carry)."""
    if not ep.live:
        return True
    if event_type == EventType.MESSAGE_RECEIVED:
        return not ep.notify_received
    if event_type == EventType.MESSAGE_SENT:
        return not ep.notify_sent
    if event_type == EventType.MESSAGE_STATUS:
        return not (ep.notify_delivery or ep.notify_read)
    return False


MAX_ID = 64  # the id columns of the outbox (``String(64)``)


def check_ids(event: Event) -> None:
    """Reject an event whose ids the outbox cannot store (empty, longer than 64 characters, or
    holding NUL, which PostgreSQL text refuses): it would fail the whole window of deliveries it
    is written with."""
    for name in ("id", "instance_id", "user_id"):
        value = getattr(event, name)
        if value is not None and not (0 < len(value) <= MAX_ID and "\x00" not in value):
            raise Reject(f"malformed event: {name} cannot be stored")


class EventConsumer:
    """The handler of ``wa.events.webhooks`` (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.endpoints = dispatcher.repo.endpoints
        self.replica = dispatcher.replica

    def skippable(self, delivery: Delivery) -> bool:
        """Whether the message can be acked unread (see the module docstring)."""
        event_type = header_type(delivery)
        if event_type is None:
            return False
        if event_type not in RELEVANT:
            return True
        if event_type not in WEBHOOK_EVENT_TYPES:
            return False
        prefix = event_type + "."
        key = delivery.routing_key
        if not key.startswith(prefix):
            return False
        ep = self.replica.get(key[len(prefix) :])
        return ep is not None and never_wanted(ep, event_type)

    async def __call__(self, delivery: Delivery) -> None:
        if self.skippable(delivery):
            return
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed event: {exc.error_count()} errors") from exc
        await self.handle(event)

    async def handle(self, event: Event) -> None:
        """Apply or ingest one parsed event; returns once the store committed. Raises
        :class:`Reject` for a malformed one, the store's errors otherwise."""
        try:
            if event.type in (EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED):
                snap = InstanceSnapshot.model_validate(event.data)
                self.replica.apply_snapshot(snap)
                await self.endpoints.apply_snapshot(snap)
                return
            if event.type == EventType.INSTANCE_DELETED:
                data = InstanceDeletedData.model_validate(event.data)
                self.replica.tombstone(data.instance_id, data.user_id)
                cancelled = await self.endpoints.delete_instance(data.instance_id, data.user_id)
                log.info(
                    "instance deleted; deliveries cancelled", instance_id=data.instance_id, count=cancelled
                )
                return
        except ValidationError as exc:
            raise Reject(f"malformed {event.type} data: {exc.error_count()} errors") from exc
        if event.type not in WEBHOOK_EVENT_TYPES:
            return
        check_ids(event)
        await self.dispatcher.ingest(event)


class ReplicaFollower:
    """The handler of this process's fan-out queue of ``instance.*`` events: keeps ``replica``
    current with events another replica's :class:`EventConsumer` took (memory only: that one
    writes the store). A malformed event is dropped (its durable copy is dead-lettered)."""

    BINDING_KEYS = tuple(f"{t}.#" for t in sorted(INSTANCE_EVENTS))

    def __init__(self, replica: EndpointReplica) -> None:
        self.replica = replica

    async def __call__(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
            if event.type == EventType.INSTANCE_DELETED:
                data = InstanceDeletedData.model_validate(event.data)
                self.replica.tombstone(data.instance_id, data.user_id)
            elif event.type in INSTANCE_EVENTS:
                self.replica.apply_snapshot(InstanceSnapshot.model_validate(event.data))
        except ValidationError:
            return
