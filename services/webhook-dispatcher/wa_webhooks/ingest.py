"""Events into deliveries: one per interested instance whose settings want the event (the outbox
write itself is ``intake``'s: before the bus message is acked, idempotent on the event id)."""

from __future__ import annotations

from wa_common.schemas import Event, EventType
from wa_common.schemas.events import WEBHOOK_EVENT_TYPES
from wa_webhooks.deliveries import NewDelivery
from wa_webhooks.models import Endpoint
from wa_webhooks.replica import EndpointReplica, EndpointView
from wa_webhooks.service import wants, webhook_body, webhook_data


async def interested(replica: EndpointReplica, event: Event) -> list[EndpointView]:
    """The live instances ``event`` may concern: its own, or for ``limit_exceeded`` without an
    instance every webhook-enabled instance of ``event.user_id`` (from the store: rare)."""
    if event.instance_id:
        ep = await replica.lookup(event.instance_id)
        return [ep] if ep is not None and ep.live else []
    if event.type == EventType.LIMIT_EXCEEDED and event.user_id:
        return await replica.of_user(event.user_id)
    return []


def delivery_for(ep: Endpoint | EndpointView, event: Event) -> NewDelivery | None:
    """``event``'s delivery to ``ep``, or ``None`` when its settings do not want it. ``data.instanceId``
    is the endpoint's instance (``limit_exceeded`` about a whole user names none)."""
    if not wants(
        enabled=ep.enabled,
        url=ep.url,
        notify_received=ep.notify_received,
        notify_sent=ep.notify_sent,
        notify_delivery=ep.notify_delivery,
        notify_read=ep.notify_read,
        event=event.type,
        data=event.data,
    ):
        return None
    data = webhook_data(event.type, event.data, ep.instance_id)
    body = webhook_body(event.type, data, event.occurred_at).decode("utf-8")
    return NewDelivery.to(ep, event_id=event.id, event=event.type, body=body, occurred_at=event.occurred_at)


async def deliveries_for(replica: EndpointReplica, event: Event) -> list[tuple[NewDelivery, EndpointView]]:
    """The deliveries ``event`` causes (webhook-visible events only), each with its endpoint's
    settings; no store work unless an instance is not in the replica yet."""
    if event.type not in WEBHOOK_EVENT_TYPES:
        return []
    endpoints = await interested(replica, event)
    return [(d, ep) for ep in endpoints if (d := delivery_for(ep, event)) is not None]
