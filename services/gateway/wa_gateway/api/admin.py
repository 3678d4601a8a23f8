"""Administration: database status/switch (reference, "Database Management") and the cluster's
workers, shards and sessions. Administrators only (403 for users)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from wa_common.schemas.cluster import ClusterWorkers, DbStatus
from wa_common.schemas.instances import SuccessMessage
from wa_common.schemas.session import SessionQuery
from wa_gateway import schemas as s
from wa_gateway.api.routing import AdminDep
from wa_gateway.backend import answer
from wa_gateway.errors import ApiError, error_responses
from wa_gateway.service import store_status
from wa_gateway.state import gateway

router = APIRouter(tags=["Administration"])


@router.get(
    "/api/db/status",
    response_model=DbStatus,
    responses=error_responses(401, 403, 429, 503),
    summary="Database status (admin)",
)
async def db_status(request: Request, caller: AdminDep) -> DbStatus:
    """The session worker's store as ``{provider, url}`` (credentials removed from the URL), and
    every service's store in ``services`` (``null`` for a service that did not answer)."""
    return await store_status(gateway(request).backend, caller)


@router.post(
    "/api/db/switch",
    responses={
        200: {"model": SuccessMessage, "description": "Switched (not available yet: always 409)"},
        **error_responses(400, 401, 403, 409, 429),
    },
    summary="Switch database provider (admin; not available)",
)
async def db_switch(request: Request, body: s.DbSwitchBody, caller: AdminDep) -> SuccessMessage:
    """Live switching of the store is not available in this version: answers **409**. Change
    ``WORKER_DATABASE_URL`` (PostgreSQL, SQLite or MongoDB), run ``migrate`` and restart the
    workers instead."""
    raise ApiError(
        409,
        f"Live database switching is not available yet: to use {body.provider!r}, set "
        "WORKER_DATABASE_URL, run 'python -m wa_session_worker migrate' and restart the workers",
    )


@router.get(
    "/api/admin/workers",
    response_model=ClusterWorkers,
    responses=error_responses(401, 403, 429, 503),
    summary="Workers, shards and sessions (admin)",
)
async def workers(request: Request, response: Response, caller: AdminDep) -> Any:
    """Live session workers with the shards they hold and the sessions they run."""
    return answer(await gateway(request).backend.query(SessionQuery.CLUSTER, caller), response)
