"""Public routes of identity: ``/api/auth/*`` and ``/api/users/*``, relayed to auth.

The gateway authenticates the caller (``get_caller``/``require_admin``), then forwards the JSON
body to auth's internal API with the caller identity in ``x-wa-caller``; auth validates the body
and decides what the caller may change. Auth's answer is relayed: the body on success, and on
failure an ``HTTPException`` with auth's message (and ``Retry-After`` for 429).

| route | who | answer |
|---|---|---|
| ``POST /api/auth/login`` | anyone | ``{token, user{id,email,firstName,lastName,apiKey}}``; 401; 429 |
| ``GET /api/auth/me`` | caller | ``{id, email, firstName, lastName, role}`` |
| ``POST /api/auth/api-key/rotate`` | caller | ``{apiKey}`` (the old key stops working at once) |
| ``POST /api/auth/password`` | caller | 204; body ``{currentPassword, newPassword}`` |
| ``GET /api/users?limit=&skip=`` | admin | ``{users: [...], pagination{total,limit,skip,hasMore}}`` |
| ``POST /api/users`` | admin | 201, the user with ``apiKey`` |
| ``GET /api/users/{id}`` | admin or self | user |
| ``PATCH``/``PUT /api/users/{id}`` | admin (any field) or self (names, password) | user |
| ``DELETE /api/users/{id}`` | admin | ``{success, message}`` |
| ``POST /api/users/{id}/api-key`` | admin or self | ``{apiKey}`` |
| ``PUT /api/users/{id}/ip-allowlist`` | admin | user; body ``{ipAllowlist: ["10.0.0.0/8", ...]}`` |
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from wa_common.ids import ID_PATTERN
from wa_common.schemas import Caller
from wa_common.schemas.session import MAX_SKIP
from wa_gateway.auth.client import AuthUnavailable
from wa_gateway.auth.dependencies import auth_layer, get_caller, require_admin
from wa_gateway.auth.layer import AuthLayer
from wa_gateway.errors import ApiError, error_responses
from wa_gateway.input_guard import guard_input

router = APIRouter(prefix="/api")


async def _checked_caller(
    caller: Annotated[Caller, Depends(get_caller)], _: Annotated[None, Depends(guard_input)]
) -> Caller:
    """The caller (401/403/429 as ``get_caller``), then the request's input checked (400)."""
    return caller


async def _checked_admin(
    caller: Annotated[Caller, Depends(require_admin)], _: Annotated[None, Depends(guard_input)]
) -> Caller:
    """As :func:`_checked_caller`, for admins only (403)."""
    return caller


Layer = Annotated[AuthLayer, Depends(auth_layer)]
AnyCaller = Annotated[Caller, Depends(_checked_caller)]
Admin = Annotated[Caller, Depends(_checked_admin)]
JsonObject = Annotated[dict[str, Any], Body()]
UserId = Annotated[str, Path(alias="userId", pattern=ID_PATTERN)]


def _relay(response: httpx.Response, *, only: tuple[str, ...] | None = None) -> Response:
    """Auth's answer as the gateway's: the JSON body, or an :class:`ApiError` with its message
    and ``details`` (which field was refused, and why)."""
    if response.status_code == 204:
        return Response(status_code=204)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        details = body.get("details") if isinstance(body, dict) else None
        headers = (
            {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else None
        )
        raise ApiError(
            response.status_code,
            message if isinstance(message, str) and message else "request refused",
            details if isinstance(details, list) and details else None,
            headers,
        )
    if only is not None and isinstance(body, dict):
        body = {k: body[k] for k in only if k in body}
    return JSONResponse(body, status_code=response.status_code)


async def _call(layer: AuthLayer, request: Request, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One call to auth's internal API with the client's address (``x-wa-client-ip``: auth
    throttles password checks per address and applies IP allow-lists at login)."""
    try:
        return await layer.client.request(method, path, client_ip=layer.client_ip(request), **kwargs)
    except AuthUnavailable as exc:
        raise HTTPException(503, detail="the authentication service is unavailable; retry shortly") from exc


@router.post(
    "/auth/login",
    tags=["Authentication"],
    summary="Log in with email and password",
    dependencies=[Depends(guard_input)],
    responses=error_responses(400, 401, 403, 429, 503),
)
async def login(body: JsonObject, request: Request, layer: Layer) -> Response:
    response = await _call(layer, request, "POST", "/internal/login", json=body)
    return _relay(response)


@router.get(
    "/auth/me",
    tags=["Authentication"],
    summary="The current user",
    responses=error_responses(401, 403, 429, 503),
)
async def me(request: Request, caller: AnyCaller, layer: Layer) -> Response:
    response = await _call(layer, request, "GET", f"/internal/users/{caller.user_id}", caller=caller)
    return _relay(response, only=("id", "email", "firstName", "lastName", "role"))


@router.post(
    "/auth/api-key/rotate",
    tags=["Authentication"],
    summary="Replace your API key",
    responses=error_responses(401, 403, 429, 503),
)
async def rotate_own_key(request: Request, caller: AnyCaller, layer: Layer) -> Response:
    return _relay(
        await _call(layer, request, "POST", f"/internal/users/{caller.user_id}/api-key", caller=caller)
    )


@router.post(
    "/auth/password",
    tags=["Authentication"],
    summary="Change your password",
    status_code=204,
    responses=error_responses(400, 401, 403, 409, 429, 503),
)
async def change_password(request: Request, body: JsonObject, caller: AnyCaller, layer: Layer) -> Response:
    return _relay(await _call(layer, request, "POST", "/internal/password", json=body, caller=caller))


@router.get(
    "/users", tags=["Users"], summary="List users (admin)", responses=error_responses(400, 401, 403, 429, 503)
)
async def list_users(
    request: Request,
    caller: Admin,
    layer: Layer,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
) -> Response:
    params = {"limit": limit, "skip": skip}
    return _relay(await _call(layer, request, "GET", "/internal/users", caller=caller, params=params))


@router.post(
    "/users",
    tags=["Users"],
    summary="Create a user (admin)",
    status_code=201,
    responses=error_responses(400, 401, 403, 409, 429, 503),
)
async def create_user(request: Request, body: JsonObject, caller: Admin, layer: Layer) -> Response:
    return _relay(await _call(layer, request, "POST", "/internal/users", json=body, caller=caller))


@router.get(
    "/users/{userId}",
    tags=["Users"],
    summary="Get a user (admin, or self)",
    responses=error_responses(401, 403, 404, 429, 503),
)
async def get_user(request: Request, user_id: UserId, caller: AnyCaller, layer: Layer) -> Response:
    return _relay(await _call(layer, request, "GET", f"/internal/users/{user_id}", caller=caller))


@router.patch(
    "/users/{userId}",
    tags=["Users"],
    summary="Update a user (admin; self: names, password)",
    responses=error_responses(400, 401, 403, 404, 409, 429, 503),
)
@router.put(
    "/users/{userId}",
    tags=["Users"],
    summary="Update a user (admin; self: names, password)",
    responses=error_responses(400, 401, 403, 404, 409, 429, 503),
)
async def update_user(
    request: Request, user_id: UserId, body: JsonObject, caller: AnyCaller, layer: Layer
) -> Response:
    return _relay(
        await _call(layer, request, "PATCH", f"/internal/users/{user_id}", json=body, caller=caller)
    )


@router.delete(
    "/users/{userId}",
    tags=["Users"],
    summary="Delete a user and their instances (admin)",
    responses=error_responses(401, 403, 404, 409, 429, 503),
)
async def delete_user(request: Request, user_id: UserId, caller: Admin, layer: Layer) -> Response:
    return _relay(await _call(layer, request, "DELETE", f"/internal/users/{user_id}", caller=caller))


@router.post(
    "/users/{userId}/api-key",
    tags=["Users"],
    summary="Rotate a user's API key (admin, or self)",
    responses=error_responses(401, 403, 404, 429, 503),
)
async def rotate_key(request: Request, user_id: UserId, caller: AnyCaller, layer: Layer) -> Response:
    return _relay(await _call(layer, request, "POST", f"/internal/users/{user_id}/api-key", caller=caller))


@router.put(
    "/users/{userId}/ip-allowlist",
    tags=["Users"],
    summary="Set a user's IP allow-list (admin)",
    responses=error_responses(400, 401, 403, 404, 429, 503),
)
async def set_ip_allowlist(
    request: Request, user_id: UserId, body: JsonObject, caller: Admin, layer: Layer
) -> Response:
    path = f"/internal/users/{user_id}/ip-allowlist"
    return _relay(await _call(layer, request, "PUT", path, json=body, caller=caller))
