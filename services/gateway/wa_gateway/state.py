"""The gateway's per-process state and the dependencies every public route uses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from wa_common.schemas import Caller
from wa_gateway.auth import get_caller, require_admin
from wa_gateway.backend import Backend
from wa_gateway.errors import ApiError
from wa_gateway.limits import MAX_API_CALLS, LimitBook
from wa_gateway.metering import UsageMeter
from wa_gateway.ratelimit import RateLimiter
from wa_gateway.settings import GatewaySettings

_INSTANCE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass
class Gateway:
    settings: GatewaySettings
    backend: Backend
    meter: UsageMeter
    limits: LimitBook
    rate: RateLimiter


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _admit(request: Request, caller: Caller) -> Caller:
    gw = gateway(request)
    wait = gw.rate.acquire(caller.user_id)
    if wait > 0:
        raise ApiError(
            429,
            f"Rate limit exceeded: at most {gw.rate.rate:g} requests per second "
            f"(burst {gw.rate.burst}) per API key",
            headers={"Retry-After": gw.rate.retry_after(wait)},
        )
    gw.limits.check(caller.user_id, MAX_API_CALLS)
    instance_id = request.path_params.get("instanceId")
    gw.meter.count(caller.user_id, instance_id if isinstance(instance_id, str) else None)
    return caller


async def api_caller(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The authenticated caller (401), within its rate limit and ``maxApiCalls`` (429); counted."""
    return _admit(request, caller)


async def admin_caller(request: Request, caller: Annotated[Caller, Depends(require_admin)]) -> Caller:
    """As :func:`api_caller`, for admins only (403 for users)."""
    return _admit(request, caller)


def check_instance_id(instance_id: str) -> str:
    """404 for an id that cannot be an instance's (saves a bus round trip)."""
    if not _INSTANCE_ID.match(instance_id):
        raise ApiError(404, "Instance not found")
    return instance_id


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    from wa_gateway.schemas import ErrorBody

    text = {
        400: "Invalid request (missing or malformed fields, bad phone number, limit above 1000)",
        401: "Missing, invalid or expired token / API key",
        403: "Administrator rights required",
        404: "Instance (or resource) not found, or not the caller's",
        409: "Conflict with the current state",
        413: "Request body or file too large",
        429: "Rate limit or usage limit exceeded (see Retry-After)",
        503: "No worker or service answered in time; retry later",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}
