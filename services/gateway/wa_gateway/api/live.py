"""``GET /api/events/stream``: the caller's events as they happen, as server-sent events.

Not in the reference (an extension for the dashboard and for clients that prefer a stream to a
webhook). Authenticated like every route (``Authorization: Bearer`` or ``x-api-key``; browsers
read it with ``fetch`` since ``EventSource`` cannot send headers, which keeps tokens out of
URLs). Scoped to the caller's instances; ``instanceId`` narrows it to one of them (404 when not
the caller's); admins may pass ``all=true`` for every user's.

Wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html): a first frame
``event: ready`` with ``{"userId"}``, then one frame per event ``id: <event id>``,
``event: <type>``, ``data: <JSON of wa_gateway.live.browser_view>``, and a comment line
``: ping`` every ``GATEWAY_STREAM_HEARTBEAT_S`` seconds so proxies keep the connection open. A
client too slow to read gets a final ``event: overflow`` frame and the stream ends. Live only:
events are not replayed after a reconnection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from wa_common.schemas import Caller
from wa_common.schemas.session import SessionQuery
from wa_gateway.backend import ensure_ok
from wa_gateway.errors import ApiError, error_responses
from wa_gateway.live import LiveHub, Subscription, browser_view
from wa_gateway.state import api_caller, check_instance_id, gateway

router = APIRouter(prefix="/api/events", tags=["Live events"])
CallerDep = Annotated[Caller, Depends(api_caller)]


def _frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get(
    "/stream",
    summary="Live events of the caller's instances (server-sent events)",
    responses={
        200: {"description": "An event stream", "content": {"text/event-stream": {}}},
        **error_responses(401, 403, 404, 429, 503),
    },
)
async def stream(
    request: Request,
    caller: CallerDep,
    instance_id: Annotated[
        str | None, Query(alias="instanceId", description="only this instance's events")
    ] = None,
    all: Annotated[bool, Query(description="admins only: every user's instances")] = False,
) -> StreamingResponse:
    """``text/event-stream`` of the caller's events (module docstring: frames and limits).
    401 without credentials, 403 for ``all=true`` by a non-admin, 404 for an ``instanceId`` that
    is not the caller's, 503 when the gateway has no broker connection."""
    gw = gateway(request)
    if all and not caller.is_admin:
        raise ApiError(403, "Forbidden: all=true is for administrators")
    if instance_id is not None:
        ensure_ok(await gw.backend.query(SessionQuery.STATUS, caller, check_instance_id(instance_id)))
    hub: LiveHub = request.app.state.live_hub
    try:
        sub = await hub.subscribe(caller.user_id, all_users=all, instance_id=instance_id)
    except Exception as exc:
        raise ApiError(
            503, "Service unavailable: live events need the message broker; retry shortly"
        ) from exc
    heartbeat_s = gw.settings.stream_heartbeat_s
    return StreamingResponse(
        _events(hub, sub, caller.user_id, heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(hub: LiveHub, sub: Subscription, user_id: str, heartbeat_s: float) -> AsyncIterator[bytes]:
    try:
        yield _frame("ready", {"userId": user_id})
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            if event is None:
                if sub.overflowed:
                    yield _frame("overflow", {"error": "too many events unread: reconnect"})
                return
            yield _frame(event.type, browser_view(event), event.id)
    finally:
        hub.unsubscribe(sub)  # synchronous: this generator is being cancelled when the client left
