"""Statistics (reference, "Statistics and Monitoring") and per-user limits, answered by the stats
service over ``wa.queries.stats`` (operations in ``wa_common.schemas.stats``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from wa_common.schemas import Caller
from wa_common.schemas.stats import (
    STATS_INSTANCE,
    STATS_LIMITS_GET,
    STATS_LIMITS_SET,
    STATS_SYSTEM,
    STATS_USER,
    InstanceStatsQuery,
    Limits,
    LimitsQuery,
    SetLimitsQuery,
    SystemStatsQuery,
    UserStatsQuery,
)
from wa_gateway import schemas as s
from wa_gateway.backend import ensure_ok, relay
from wa_gateway.errors import error_responses
from wa_gateway.state import admin_caller, api_caller, check_id, check_instance_id, gateway

router = APIRouter(tags=["Statistics"])

CallerDep = Annotated[Caller, Depends(api_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]


@router.get(
    "/api/stats/user",
    response_model=s.UserStats,
    responses=error_responses(400, 401, 429, 503),
    summary="User statistics",
)
async def user_stats(
    request: Request,
    caller: CallerDep,
    period: Annotated[
        Literal["today", "week", "month", "year", "all"],
        Query(description="UTC calendar period (`today` is an extension of the reference's list)"),
    ] = "month",
) -> Response:
    """The caller's usage over ``period`` (``totalMediaSize`` in bytes), in total and per instance."""
    reply = await gateway(request).backend.stats(STATS_USER, caller, UserStatsQuery(period=period).dump())
    return relay(reply)


@router.get(
    "/api/stats/instances/{instanceId}",
    response_model=s.InstanceStats,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Instance statistics",
)
async def instance_stats(
    request: Request,
    instanceId: str,
    caller: CallerDep,
    period: Annotated[
        Literal["today", "week", "month", "all"], Query(description="UTC calendar period")
    ] = "today",
) -> Response:
    """One instance's usage over ``period`` with ``dailyStats`` (days with usage, oldest first).
    404 for an instance that is not the caller's."""
    instance_id = check_instance_id(instanceId)
    backend = gateway(request).backend
    reply = await backend.stats(
        STATS_INSTANCE,
        caller,
        InstanceStatsQuery(period=period, instanceId=instance_id).dump(),
        instance_id=instance_id,
    )
    return relay(reply)


@router.get(
    "/api/stats/system",
    response_model=s.SystemStats,
    responses=error_responses(401, 403, 429, 503),
    summary="System statistics (admin)",
)
async def system_stats(request: Request, caller: AdminDep) -> Response:
    """Instances and users (total/active) and the whole system's usage. Administrators only."""
    reply = await gateway(request).backend.stats(STATS_SYSTEM, caller, SystemStatsQuery().dump())
    return relay(reply)


@router.get(
    "/api/users/{userId}/limits",
    response_model=s.UserLimitsOut,
    responses=error_responses(401, 403, 404, 429, 503),
    summary="Get a user's limits (admin)",
    tags=["Limits"],
)
async def get_limits(request: Request, userId: str, caller: AdminDep) -> Response:
    """``{userId, limits: {maxMessagesSent, maxApiCalls, maxInstances}, state: [blocks]}``;
    ``null`` = unlimited. Daily limits count per UTC day."""
    user_id = check_id(userId, "User not found")
    reply = await gateway(request).backend.stats(STATS_LIMITS_GET, caller, LimitsQuery(userId=user_id).dump())
    return relay(reply)


@router.put(
    "/api/users/{userId}/limits",
    response_model=s.UserLimitsOut,
    responses=error_responses(400, 401, 403, 404, 429, 503),
    summary="Set a user's limits (admin)",
    tags=["Limits"],
)
async def set_limits(request: Request, userId: str, body: s.UserLimitsBody, caller: AdminDep) -> Response:
    """Replace a user's limits (omitted/``null`` = unlimited). Raising a limit lifts its block
    at once on this gateway replica (others: at the next ``limit_exceeded`` or restart)."""
    gw = gateway(request)
    user_id = check_id(userId, "User not found")
    query = SetLimitsQuery(userId=user_id, limits=Limits.model_validate(body.model_dump()))
    reply = ensure_ok(await gw.backend.stats(STATS_LIMITS_SET, caller, query.dump()))
    if isinstance(reply.data, dict):
        gw.limits.replace_user(user_id, reply.data.get("state") or [])
    return relay(reply)
