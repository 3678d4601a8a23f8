"""The event consumer (``wa.events.webhooks``). Gateway requests (``wa.queries.webhooks``) are
answered by the shared request router (``api.WebhooksApi.router``).

``instance.created``/``instance.updated`` refresh the settings replica (newest ``updatedAt``
wins), ``instance.deleted`` tombstones it and cancels pending deliveries, webhook events go to
the outbox. The handler returns (and the message is acked) only after the store committed, so an
acked event is never lost; a store failure raises and the message is redelivered.
"""

from __future__ import annotations

from pydantic import ValidationError

from wa_common.bus import Delivery, Reject
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import InstanceDeletedData, InstanceSnapshot
from wa_webhooks.outbox import Dispatcher

log = get_logger(__name__)


class EventConsumer:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.endpoints = dispatcher.repo.endpoints

    async def __call__(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed event: {exc.error_count()} errors") from exc
        await self.handle(event)

    async def handle(self, event: Event) -> None:
        try:
            if event.type in (EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED):
                await self.endpoints.apply_snapshot(InstanceSnapshot.model_validate(event.data))
                return
            if event.type == EventType.INSTANCE_DELETED:
                data = InstanceDeletedData.model_validate(event.data)
                cancelled = await self.endpoints.delete_instance(data.instance_id, data.user_id)
                log.info(
                    "instance deleted; deliveries cancelled", instance_id=data.instance_id, count=cancelled
                )
                return
        except ValidationError as exc:
            raise Reject(f"malformed {event.type} data: {exc.error_count()} errors") from exc
        await self.dispatcher.ingest(event)
