"""Webhook deliveries of an instance, answered by the webhook dispatcher over
``wa.queries.webhooks`` (operations in ``wa_common.schemas.webhooks``)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from wa_common.bus.topology import WEBHOOKS_QUERY_QUEUE
from wa_common.schemas.webhooks import (
    DeliveryAccepted,
    DeliveryPage,
    ListDeliveries,
    Redeliver,
    SendTest,
    WebhooksOperation,
)
from wa_gateway.api.routing import CallerDep, Skip, ask_service
from wa_gateway.errors import error_responses
from wa_gateway.state import check_id, check_instance_id

router = APIRouter(prefix="/api/instances", tags=["Webhooks"])
ask_dispatcher = partial(ask_service, WEBHOOKS_QUERY_QUEUE)


@router.get(
    "/{instanceId}/webhooks/deliveries",
    response_model=DeliveryPage,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Webhook deliveries",
)
async def deliveries(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="deliveries (max 500)")] = 50,
    skip: Skip = 0,
    status: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None, Query()] = None,
) -> Any:
    """The instance's webhook deliveries, newest first, each with its attempts."""
    instance_id = check_instance_id(instanceId)
    query = ListDeliveries(limit=limit, skip=skip, status=status)
    return await ask_dispatcher(
        WebhooksOperation.LIST_DELIVERIES, request, response, caller, query, instance_id=instance_id
    )


@router.post(
    "/{instanceId}/webhooks/deliveries/{deliveryId}/redeliver",
    status_code=202,
    response_model=DeliveryAccepted,
    responses=error_responses(400, 401, 404, 409, 429, 503),
    summary="Redeliver a webhook",
)
async def redeliver(
    request: Request, response: Response, instanceId: str, deliveryId: str, caller: CallerDep
) -> Any:
    """Send a delivery's body again as a new delivery (same ``X-Webhook-Id``); **202**. 409 while
    the original is still pending; 400 when webhooks are disabled or no URL is set."""
    instance_id = check_instance_id(instanceId)
    body = Redeliver(delivery_id=check_id(deliveryId, "Delivery not found"))
    return await ask_dispatcher(
        WebhooksOperation.REDELIVER, request, response, caller, body, instance_id=instance_id
    )


@router.post(
    "/{instanceId}/webhooks/test",
    status_code=202,
    response_model=DeliveryAccepted,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Send a test webhook",
)
async def send_test(request: Request, response: Response, instanceId: str, caller: CallerDep) -> Any:
    """Enqueue a ``webhook_test`` event to the instance's URL; **202** with the delivery."""
    instance_id = check_instance_id(instanceId)
    return await ask_dispatcher(
        WebhooksOperation.SEND_TEST, request, response, caller, SendTest(), instance_id=instance_id
    )
