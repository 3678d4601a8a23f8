"""Webhook deliveries of an instance, answered by the webhook dispatcher over
``wa.queries.webhooks`` (operations in ``wa_common.schemas.webhooks``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from wa_common.schemas import Caller
from wa_common.schemas.session import MAX_SKIP
from wa_common.schemas.webhooks import ListDeliveries, Redeliver, SendTest, WebhooksOperation
from wa_gateway import schemas as s
from wa_gateway.backend import relay
from wa_gateway.errors import error_responses
from wa_gateway.state import api_caller, check_id, check_instance_id, gateway

router = APIRouter(prefix="/api/instances", tags=["Webhooks"])
CallerDep = Annotated[Caller, Depends(api_caller)]


@router.get(
    "/{instanceId}/webhooks/deliveries",
    response_model=s.DeliveryPage,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Webhook deliveries",
)
async def deliveries(
    request: Request,
    instanceId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="deliveries (max 500)")] = 50,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    status: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None, Query()] = None,
) -> Response:
    """The instance's webhook deliveries, newest first, each with its attempts."""
    query = ListDeliveries(limit=limit, skip=skip, status=status)
    reply = await gateway(request).backend.webhooks(
        WebhooksOperation.LIST_DELIVERIES, caller, check_instance_id(instanceId), query.dump()
    )
    return relay(reply)


@router.post(
    "/{instanceId}/webhooks/deliveries/{deliveryId}/redeliver",
    status_code=202,
    response_model=s.DeliveryAccepted,
    responses=error_responses(400, 401, 404, 409, 429, 503),
    summary="Redeliver a webhook",
)
async def redeliver(request: Request, instanceId: str, deliveryId: str, caller: CallerDep) -> Response:
    """Send a delivery's body again as a new delivery (same ``X-Webhook-Id``); **202**. 409 while
    the original is still pending; 400 when webhooks are disabled or no URL is set."""
    reply = await gateway(request).backend.webhooks(
        WebhooksOperation.REDELIVER,
        caller,
        check_instance_id(instanceId),
        Redeliver(deliveryId=check_id(deliveryId, "Delivery not found")).dump(),
    )
    return relay(reply)


@router.post(
    "/{instanceId}/webhooks/test",
    status_code=202,
    response_model=s.DeliveryAccepted,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Send a test webhook",
)
async def send_test(request: Request, instanceId: str, caller: CallerDep) -> Response:
    """Enqueue a ``webhook_test`` event to the instance's URL; **202** with the delivery."""
    reply = await gateway(request).backend.webhooks(
        WebhooksOperation.SEND_TEST, caller, check_instance_id(instanceId), SendTest().dump()
    )
    return relay(reply)
