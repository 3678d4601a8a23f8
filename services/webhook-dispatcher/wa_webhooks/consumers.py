"""Bus consumers: events (``wa.events.webhooks``) and gateway requests (``wa.queries.webhooks``).

Events: ``instance.created``/``instance.updated`` refresh the settings replica (newest
``updatedAt`` wins), ``instance.deleted`` tombstones it and cancels pending deliveries, webhook
events go to the outbox. The handler returns (and the message is acked) only after the store
committed, so an acked event is never lost; a store failure raises and the message is redelivered.

Requests: always answered and acknowledged, never retried into the dead-letter queue — a request
that is malformed or invalid is the caller's input (400), one that fails unexpectedly gets a 500
(the caller, with its deadline, decides whether to try again).
"""

from __future__ import annotations

from pydantic import ValidationError

from wa_common.bus import Bus, Delivery, Reject, send_reply
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType, Reply, Request
from wa_common.schemas.events import InstanceDeletedData, InstanceSnapshot
from wa_webhooks.api import WebhooksApi
from wa_webhooks.outbox import Dispatcher

log = get_logger(__name__)


class EventConsumer:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def __call__(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed event: {exc.error_count()} errors") from exc
        await self.handle(event)

    async def handle(self, event: Event) -> None:
        repo = self.dispatcher.repo
        try:
            if event.type in (EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED):
                await repo.apply_snapshot(InstanceSnapshot.model_validate(event.data))
                return
            if event.type == EventType.INSTANCE_DELETED:
                data = InstanceDeletedData.model_validate(event.data)
                cancelled = await repo.delete_instance(data.instance_id, data.user_id)
                log.info(
                    "instance deleted; deliveries cancelled", instance_id=data.instance_id, count=cancelled
                )
                return
        except ValidationError as exc:
            raise Reject(f"malformed {event.type} data: {exc.error_count()} errors") from exc
        await self.dispatcher.ingest(event)


class RequestConsumer:
    def __init__(self, bus: Bus, api: WebhooksApi) -> None:
        self.bus = bus
        self.api = api

    async def __call__(self, delivery: Delivery) -> None:
        try:
            request = Request.from_bytes(delivery.body)
        except ValidationError as exc:
            log.info("malformed webhooks request answered 400", errors=exc.error_count())
            await send_reply(self.bus, delivery, Reply.failure(400, "Malformed request"))
            return
        if request.expired():
            log.info("request past its deadline dropped", name=request.name)
            return
        try:
            reply = await self.api.handle(request)
        except Exception:
            log.exception("webhooks request failed", name=request.name, request_id=request.id)
            reply = Reply.failure(500, "Webhook deliveries are unavailable right now")
        await send_reply(self.bus, delivery, reply)
