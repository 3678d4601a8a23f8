"""Instance management under ``/api/instances`` (reference, "Instance Management").

Shared per-instance routes that exist in both the ``/api/instances/{instanceId}/...`` and the
``/api/whatsapp/{instanceId}/...`` families are in ``messaging.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from wa_common.ids import derived_id, new_id
from wa_common.schemas import Caller, Reply
from wa_common.schemas.session import (
    MAX_SKIP,
    ActivityQuery,
    ChatMessagesQuery,
    EventsQuery,
    ListInstances,
    SessionCommand,
    SessionQuery,
    payload,
)
from wa_gateway import schemas as s
from wa_gateway.backend import relay
from wa_gateway.errors import error_responses
from wa_gateway.limits import MAX_INSTANCES
from wa_gateway.phones import recipient_or_400
from wa_gateway.service import MAX_PAGE, check_webhook_url, event_names, iso_or_400, refresh_instance_quota
from wa_gateway.state import api_caller, check_instance_id, gateway

router = APIRouter(prefix="/api/instances", tags=["Instances"])

Id = Annotated[str, "instanceId"]
CallerDep = Annotated[Caller, Depends(api_caller)]
COMMON = error_responses(400, 401, 404, 409, 429, 503)


@router.post(
    "",
    status_code=201,
    response_model=s.InstanceOut,
    responses=error_responses(400, 401, 429, 503),
    summary="Create instance",
)
async def create_instance(request: Request, body: s.CreateInstanceBody, caller: CallerDep) -> Response:
    """Create an instance for the caller; answers **201** with the instance (status
    ``connecting``: fetch the QR code next). 429 when the caller already owns ``maxInstances``
    instances (not a periodic limit: no ``Retry-After``; deleting an instance or a raised limit
    lifts it); 400 for a refused ``webhookUrl``. With an ``Idempotency-Key``, the instance id is
    derived from the caller and the key: a retry answers the instance the first request created
    (201, the same body), even once ``maxInstances`` is reached."""
    gw = gateway(request)
    key = request.headers.get("idempotency-key")
    instance_id = derived_id("instance", caller.user_id, key) if key else new_id()
    if key:
        earlier = await gw.backend.query(SessionQuery.GET_INSTANCE, caller, instance_id)
        if earlier.ok and earlier.status == 200 and isinstance(earlier.data, dict):
            return relay(Reply.success(_created_body(earlier.data), status=201))
    await refresh_instance_quota(gw, caller)
    gw.limits.check(caller.user_id, MAX_INSTANCES)
    await check_webhook_url(body.webhook_url, allow_private=gw.settings.private_webhook_urls_allowed)
    reply = await gw.backend.command(
        SessionCommand.CREATE_INSTANCE, caller, instance_id, payload(body), idempotency_key=key
    )
    return relay(reply)


def _created_body(instance: dict[str, Any]) -> dict[str, Any]:
    """The 201 body of a create (``InstanceOut``'s fields) from an instance's detail body."""
    return {k: instance[k] for k in s.InstanceOut.model_fields if k in instance}


@router.get(
    "", response_model=s.InstanceList, responses=error_responses(401, 429, 503), summary="List instances"
)
async def list_instances(
    request: Request,
    caller: CallerDep,
    all: Annotated[bool, Query(description="admins only: every user's instances")] = False,
) -> Response:
    """The caller's instances with their connection status."""
    reply = await gateway(request).backend.query(
        SessionQuery.LIST_INSTANCES, caller, None, payload(ListInstances(allUsers=all and caller.is_admin))
    )
    return relay(reply)


@router.get("/{instanceId}", response_model=s.InstanceDetail, responses=COMMON, summary="Get instance")
async def get_instance(request: Request, instanceId: Id, caller: CallerDep) -> Response:
    """One instance with its ``webhookSettings`` and ``connectionStatus``."""
    reply = await gateway(request).backend.query(
        SessionQuery.GET_INSTANCE, caller, check_instance_id(instanceId)
    )
    return relay(reply)


@router.get(
    "/{instanceId}/status", response_model=s.InstanceStatus, responses=COMMON, summary="Instance status"
)
async def instance_status(request: Request, instanceId: Id, caller: CallerDep) -> Response:
    """Connection state of the instance (``lastActivity`` ISO 8601)."""
    reply = await gateway(request).backend.query(SessionQuery.STATUS, caller, check_instance_id(instanceId))
    return relay(reply)


@router.put("/{instanceId}", response_model=s.InstanceUpdated, responses=COMMON, summary="Update instance")
async def update_instance(
    request: Request, instanceId: Id, body: s.UpdateInstanceBody, caller: CallerDep
) -> Response:
    """Change name, description, webhook URL/flag and the nested ``webhookSettings``
    (``retryInterval`` in ms). The worker publishes ``webhook_updated``."""
    gw = gateway(request)
    await check_webhook_url(body.webhook_url, allow_private=gw.settings.private_webhook_urls_allowed)
    reply = await gw.backend.command(
        SessionCommand.UPDATE_INSTANCE,
        caller,
        check_instance_id(instanceId),
        body.model_dump(by_alias=True, mode="json", exclude_unset=True),
    )
    return relay(reply)


@router.delete("/{instanceId}", response_model=s.SuccessMessage, responses=COMMON, summary="Delete instance")
async def delete_instance(request: Request, instanceId: Id, caller: CallerDep) -> Response:
    """Log the session out and delete the instance with its messages, contacts and activity."""
    reply = await gateway(request).backend.command(
        SessionCommand.DELETE_INSTANCE, caller, check_instance_id(instanceId)
    )
    return relay(reply)


@router.post(
    "/{instanceId}/reconnect", response_model=s.SuccessMessage, responses=COMMON, summary="Reconnect instance"
)
async def reconnect_instance(request: Request, instanceId: Id, caller: CallerDep) -> Response:
    """Restart the WhatsApp session (from stored device keys when linked)."""
    reply = await gateway(request).backend.command(
        SessionCommand.RECONNECT, caller, check_instance_id(instanceId)
    )
    return relay(reply)


@router.get("/{instanceId}/activity", response_model=s.ActivityPage, responses=COMMON, summary="Activity log")
async def activity(
    request: Request,
    instanceId: Id,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="records (max 1000)")] = 100,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    actions: Annotated[
        str | None, Query(max_length=1000, description="comma-separated, e.g. connected,disconnected")
    ] = None,
    startDate: Annotated[str | None, Query(max_length=64, description="ISO 8601")] = None,
    endDate: Annotated[str | None, Query(max_length=64, description="ISO 8601")] = None,
) -> Response:
    """Activity records, newest first, with ``pagination {total, limit, skip, hasMore}``."""
    query = ActivityQuery(
        limit=limit,
        skip=skip,
        actions=event_names(actions),
        startDate=iso_or_400(startDate, "startDate"),
        endDate=iso_or_400(endDate, "endDate"),
    )
    reply = await gateway(request).backend.query(
        SessionQuery.ACTIVITY, caller, check_instance_id(instanceId), payload(query)
    )
    return relay(reply)


@router.get("/{instanceId}/events", response_model=s.EventsPage, responses=COMMON, summary="Latest events")
async def events(
    request: Request,
    instanceId: Id,
    caller: CallerDep,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO 8601: only events after this time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="events (max 1000)")] = 20,
    types: Annotated[
        str | None, Query(max_length=1000, description="comma-separated, e.g. message_sent,message_received")
    ] = None,
) -> Response:
    """The instance's latest events, newest first."""
    query = EventsQuery(since=iso_or_400(since, "since"), limit=limit, types=event_names(types))
    reply = await gateway(request).backend.query(
        SessionQuery.EVENTS, caller, check_instance_id(instanceId), payload(query)
    )
    return relay(reply)


@router.get(
    "/{instanceId}/chats/{chatId}/messages",
    response_model=s.ChatMessagesPage,
    responses=COMMON,
    summary="Chat message history",
)
async def chat_messages(
    request: Request,
    instanceId: Id,
    chatId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="messages (max 1000)")] = 50,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    startDate: Annotated[str | None, Query(max_length=64, description="ISO 8601")] = None,
    endDate: Annotated[str | None, Query(max_length=64, description="ISO 8601")] = None,
) -> Response:
    """Messages of one chat (``chatId`` is a JID or a phone number), newest first."""
    chat = recipient_or_400(chatId, "chatId")
    if "@" not in chat:
        chat = f"{chat}@s.whatsapp.net"
    query = ChatMessagesQuery(
        chatId=chat,
        limit=limit,
        skip=skip,
        startDate=iso_or_400(startDate, "startDate"),
        endDate=iso_or_400(endDate, "endDate"),
    )
    reply = await gateway(request).backend.query(
        SessionQuery.CHAT_MESSAGES, caller, check_instance_id(instanceId), payload(query)
    )
    return relay(reply)
