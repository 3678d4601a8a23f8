"""Statistics (reference, "Statistics and Monitoring") and per-user limits, answered by the stats
service over ``wa.queries.stats`` (operations in ``wa_common.schemas.stats``)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from wa_common.bus.topology import STATS_QUERY_QUEUE
from wa_common.schemas.stats import (
    STATS_INSTANCE,
    STATS_LIMITS_GET,
    STATS_LIMITS_SET,
    STATS_SYSTEM,
    STATS_USER,
    InstanceStats,
    InstanceStatsQuery,
    Limits,
    LimitsQuery,
    SetLimitsQuery,
    SystemStats,
    SystemStatsQuery,
    UserLimits,
    UserStats,
    UserStatsQuery,
)
from wa_gateway import schemas as s
from wa_gateway.api.routing import AdminDep, CallerDep, ask_service
from wa_gateway.backend import answer, ensure_ok
from wa_gateway.errors import error_responses
from wa_gateway.state import check_id, check_instance_id, gateway

router = APIRouter(tags=["Statistics"])
ask_stats = partial(ask_service, STATS_QUERY_QUEUE)


@router.get(
    "/api/stats/user",
    response_model=UserStats,
    responses=error_responses(400, 401, 429, 503),
    summary="User statistics",
)
async def user_stats(
    request: Request,
    response: Response,
    caller: CallerDep,
    period: Annotated[
        Literal["today", "week", "month", "year", "all"],
        Query(description="UTC calendar period (`today` is an extension of the reference's list)"),
    ] = "month",
) -> Any:
    """The caller's usage over ``period`` (``totalMediaSize`` in bytes), in total and per instance."""
    return await ask_stats(STATS_USER, request, response, caller, UserStatsQuery(period=period))


@router.get(
    "/api/stats/instances/{instanceId}",
    response_model=InstanceStats,
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Instance statistics",
)
async def instance_stats(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    period: Annotated[
        Literal["today", "week", "month", "all"], Query(description="UTC calendar period")
    ] = "today",
) -> Any:
    """One instance's usage over ``period`` with ``dailyStats`` (days with usage, oldest first).
    404 for an instance that is not the caller's."""
    instance_id = check_instance_id(instanceId)
    query = InstanceStatsQuery(period=period, instance_id=instance_id)
    return await ask_stats(STATS_INSTANCE, request, response, caller, query, instance_id=instance_id)


@router.get(
    "/api/stats/system",
    response_model=SystemStats,
    responses=error_responses(401, 403, 429, 503),
    summary="System statistics (admin)",
)
async def system_stats(request: Request, response: Response, caller: AdminDep) -> Any:
    """Instances and users (total/active) and the whole system's usage. Administrators only."""
    return await ask_stats(STATS_SYSTEM, request, response, caller, SystemStatsQuery())


@router.get(
    "/api/users/{userId}/limits",
    response_model=UserLimits,
    responses=error_responses(401, 403, 404, 429, 503),
    summary="Get a user's limits (admin)",
    tags=["Limits"],
)
async def get_limits(request: Request, response: Response, userId: str, caller: AdminDep) -> Any:
    """``{userId, limits: {maxMessagesSent, maxApiCalls, maxInstances}, state: [blocks]}``;
    ``null`` = unlimited. Daily limits count per UTC day."""
    user_id = check_id(userId, "User not found")
    return await ask_stats(STATS_LIMITS_GET, request, response, caller, LimitsQuery(user_id=user_id))


@router.put(
    "/api/users/{userId}/limits",
    response_model=UserLimits,
    responses=error_responses(400, 401, 403, 404, 429, 503),
    summary="Set a user's limits (admin)",
    tags=["Limits"],
)
async def set_limits(
    request: Request, response: Response, userId: str, body: s.UserLimitsBody, caller: AdminDep
) -> Any:
    """Replace a user's limits (omitted/``null`` = unlimited). Raising a limit lifts its block
    at once on this gateway replica (others: at the next ``limit_exceeded`` or restart)."""
    gw = gateway(request)
    user_id = check_id(userId, "User not found")
    query = SetLimitsQuery(user_id=user_id, limits=Limits.model_validate(body.model_dump()))
    reply = ensure_ok(await gw.backend.stats(STATS_LIMITS_SET, caller, query.dump()))
    if isinstance(reply.data, dict):
        gw.limits.replace_user(user_id, reply.data.get("state") or [])
    return answer(reply, response)
