"""The gateway's per-process state and the dependencies every public route uses.

Order of the checks on an API route: authentication (401/403/503) and the per-user request
rate (429) in ``auth.get_caller``; ``maxApiCalls`` (429) and the metering mark in
:func:`api_caller`/:func:`admin_caller`; then the input guard (400). Identity routes
(``/api/auth/*``, ``/api/users/*``) go through the same authentication, rate and input guard
but are neither metered nor stopped by ``maxApiCalls`` (a user over quota can still manage the
account); ``auth/routes.py`` wires them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from wa_common.ids import is_id
from wa_common.schemas import Caller
from wa_gateway.auth import get_caller, require_admin
from wa_gateway.backend import Backend
from wa_gateway.errors import ApiError
from wa_gateway.input_guard import guard_input
from wa_gateway.limits import MAX_API_CALLS, LimitBook
from wa_gateway.metering import UsageMeter, mark_metered
from wa_gateway.settings import GatewaySettings


@dataclass
class Gateway:
    settings: GatewaySettings
    backend: Backend
    meter: UsageMeter
    limits: LimitBook


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _admit(request: Request, caller: Caller) -> Caller:
    """``maxApiCalls`` (429), then mark the call for metering (``metering.MeteringMiddleware``
    counts it once the status is known: against the instance only when it succeeded)."""
    gateway(request).limits.check(caller.user_id, MAX_API_CALLS)
    mark_metered(request, caller.user_id)
    return caller


async def _metered_caller(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    return _admit(request, caller)


async def _metered_admin(request: Request, caller: Annotated[Caller, Depends(require_admin)]) -> Caller:
    return _admit(request, caller)


# Sub-dependencies resolve in declaration order: the caller (and its metering) before the guard,
# so refused input is still authenticated, rate-limited and counted.
async def api_caller(
    caller: Annotated[Caller, Depends(_metered_caller)], _: Annotated[None, Depends(guard_input)]
) -> Caller:
    """The authenticated caller (401), within its rate limit and ``maxApiCalls`` (429); counted;
    its input checked (400, ``input_guard``)."""
    return caller


async def admin_caller(
    caller: Annotated[Caller, Depends(_metered_admin)], _: Annotated[None, Depends(guard_input)]
) -> Caller:
    """As :func:`api_caller`, for admins only (403 for users)."""
    return caller


def check_instance_id(instance_id: str) -> str:
    """404 for an id that cannot be an instance's (saves a bus round trip)."""
    return check_id(instance_id, "Instance not found")


def check_id(value: str, not_found: str) -> str:
    """``value`` if it has the shape of our ids (ULIDs, ``[0-9A-Za-z_-]{1,64}``), else 404 with
    ``not_found``: a malformed id never reaches a store."""
    if not is_id(value):
        raise ApiError(404, not_found)
    return value
