"""Instance management under ``/api/instances`` (reference, "Instance Management").

Shared per-instance routes that exist in both the ``/api/instances/{instanceId}/...`` and the
``/api/whatsapp/{instanceId}/...`` families are in ``messaging.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from wa_common.ids import derived_id, new_id
from wa_common.schemas.instances import (
    ActivityPage,
    EventsPage,
    Instance,
    InstanceDetail,
    InstanceList,
    InstanceState,
    InstanceUpdated,
    SuccessMessage,
)
from wa_common.schemas.messages import ChatMessagesPage
from wa_common.schemas.session import (
    ActivityQuery,
    ChatMessagesQuery,
    EventsQuery,
    ListInstances,
    SessionCommand,
    SessionQuery,
    payload,
)
from wa_gateway import schemas as s
from wa_gateway.api.routing import CallerDep, IsoDate, Skip, forwards, relay
from wa_gateway.backend import answer, reply_as
from wa_gateway.errors import error_responses
from wa_gateway.limits import MAX_INSTANCES
from wa_gateway.phones import recipient_or_400
from wa_gateway.service import MAX_PAGE, check_webhook_url, event_names, iso_or_400, refresh_instance_quota
from wa_gateway.state import gateway

router = APIRouter(prefix="/api/instances", tags=["Instances"])

COMMON = error_responses(400, 401, 404, 409, 429, 503)


@router.post(
    "",
    status_code=201,
    response_model=Instance,
    responses=error_responses(400, 401, 429, 503),
    summary="Create instance",
)
async def create_instance(
    request: Request, response: Response, body: s.CreateInstanceBody, caller: CallerDep
) -> Any:
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
        if earlier.ok and earlier.status == 200:
            return Instance.model_validate(reply_as(InstanceDetail, earlier), from_attributes=True)
    await refresh_instance_quota(gw, caller)
    gw.limits.check(caller.user_id, MAX_INSTANCES)
    await check_webhook_url(body.webhook_url, allow_private=gw.settings.private_webhook_urls_allowed)
    reply = await gw.backend.command(
        SessionCommand.CREATE_INSTANCE, caller, instance_id, payload(body), idempotency_key=key
    )
    return answer(reply, response)


@router.get(
    "", response_model=InstanceList, responses=error_responses(401, 429, 503), summary="List instances"
)
async def list_instances(
    request: Request,
    response: Response,
    caller: CallerDep,
    all: Annotated[bool, Query(description="admins only: every user's instances")] = False,
) -> Any:
    """The caller's instances with their connection status."""
    reply = await gateway(request).backend.query(
        SessionQuery.LIST_INSTANCES, caller, None, payload(ListInstances(all_users=all and caller.is_admin))
    )
    return answer(reply, response)


@router.get("/{instanceId}", response_model=InstanceDetail, responses=COMMON, summary="Get instance")
@forwards(SessionQuery.GET_INSTANCE)
def get_instance() -> None:
    """One instance with its ``webhookSettings`` and ``connectionStatus``."""


@router.get("/{instanceId}/status", response_model=InstanceState, responses=COMMON, summary="Instance status")
@forwards(SessionQuery.STATUS)
def instance_status() -> None:
    """Connection state of the instance (``lastActivity`` ISO 8601)."""


@router.put("/{instanceId}", response_model=InstanceUpdated, responses=COMMON, summary="Update instance")
async def update_instance(
    request: Request, response: Response, instanceId: str, body: s.UpdateInstanceBody, caller: CallerDep
) -> Any:
    """Change name, description, webhook URL/flag and the nested ``webhookSettings``
    (``retryInterval`` in ms). The worker publishes ``webhook_updated``."""
    gw = gateway(request)
    await check_webhook_url(body.webhook_url, allow_private=gw.settings.private_webhook_urls_allowed)
    changes = body.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return await relay(request, response, SessionCommand.UPDATE_INSTANCE, caller, instanceId, changes)


@router.delete("/{instanceId}", response_model=SuccessMessage, responses=COMMON, summary="Delete instance")
@forwards(SessionCommand.DELETE_INSTANCE)
def delete_instance() -> None:
    """Log the session out and delete the instance with its messages, contacts and activity."""


@router.post(
    "/{instanceId}/reconnect", response_model=SuccessMessage, responses=COMMON, summary="Reconnect instance"
)
@forwards(SessionCommand.RECONNECT)
def reconnect_instance() -> None:
    """Restart the WhatsApp session (from stored device keys when linked)."""


@router.get("/{instanceId}/activity", response_model=ActivityPage, responses=COMMON, summary="Activity log")
async def activity(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="records (max 1000)")] = 100,
    skip: Skip = 0,
    actions: Annotated[
        str | None, Query(max_length=1000, description="comma-separated, e.g. connected,disconnected")
    ] = None,
    startDate: IsoDate = None,
    endDate: IsoDate = None,
) -> Any:
    """Activity records, newest first, with ``pagination {total, limit, skip, hasMore}``."""
    query = ActivityQuery(
        limit=limit,
        skip=skip,
        actions=event_names(actions),
        start_date=iso_or_400(startDate, "startDate"),
        end_date=iso_or_400(endDate, "endDate"),
    )
    return await relay(request, response, SessionQuery.ACTIVITY, caller, instanceId, query)


@router.get("/{instanceId}/events", response_model=EventsPage, responses=COMMON, summary="Latest events")
async def events(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO 8601: only events after this time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="events (max 1000)")] = 20,
    types: Annotated[
        str | None, Query(max_length=1000, description="comma-separated, e.g. message_sent,message_received")
    ] = None,
) -> Any:
    """The instance's latest events, newest first."""
    query = EventsQuery(since=iso_or_400(since, "since"), limit=limit, types=event_names(types))
    return await relay(request, response, SessionQuery.EVENTS, caller, instanceId, query)


@router.get(
    "/{instanceId}/chats/{chatId}/messages",
    response_model=ChatMessagesPage,
    responses=COMMON,
    summary="Chat message history",
)
async def chat_messages(
    request: Request,
    response: Response,
    instanceId: str,
    chatId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="messages (max 1000)")] = 50,
    skip: Skip = 0,
    startDate: IsoDate = None,
    endDate: IsoDate = None,
) -> Any:
    """Messages of one chat (``chatId`` is a JID or a phone number), newest first."""
    chat = recipient_or_400(chatId, "chatId")
    if "@" not in chat:
        chat = f"{chat}@s.whatsapp.net"
    query = ChatMessagesQuery(
        chat_id=chat,
        limit=limit,
        skip=skip,
        start_date=iso_or_400(startDate, "startDate"),
        end_date=iso_or_400(endDate, "endDate"),
    )
    return await relay(request, response, SessionQuery.CHAT_MESSAGES, caller, instanceId, query)
