"""Internal routes (prefix ``/internal``), guarded by ``x-internal-token`` when configured.

| route | who | answer |
|---|---|---|
| ``GET /internal/jwks`` | gateway | ``{"keys": [JWK]}`` (Ed25519 public keys) |
| ``POST /internal/login`` | anyone (via gateway) | ``{token, user{...,apiKey}}``; 401, 403, 429 |
| ``POST /internal/api-keys/resolve`` | gateway | ``{userId, role, active, ipAllowlist}``; 401 |
| ``GET /internal/identities/{id}`` | gateway | same shape; 404 |
| ``GET/POST /internal/users`` | admin | page of users / new user with ``apiKey`` (201) |
| ``GET/PATCH/PUT/DELETE /internal/users/{id}`` | admin or self (delete: admin) | user; 429 |
| ``POST /internal/users/{id}/api-key`` | admin or self | ``{apiKey}`` |
| ``PUT /internal/users/{id}/ip-allowlist`` | admin | user |
| ``POST /internal/password`` | self | 204; 400, 429 |

Routes that act for a user read the caller from ``x-wa-caller`` (set by the gateway); login and
the password-change routes read the client's address from ``x-wa-client-ip`` (throttling, and the
IP allow-list at login). Bodies are bounded and checked (``wa_auth.schemas``); ``{id}`` must be
1-64 of ``[0-9A-Za-z_-]``, ``limit`` 1-100 and ``skip`` 0-1,000,000,000: anything else is 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from wa_auth.api.deps import check_internal_token, client_address, get_caller, get_service
from wa_auth.schemas import (
    USER_ID_PATTERN,
    ApiKeyResolveRequest,
    ApiKeyView,
    Deleted,
    Identity,
    IpAllowlistUpdate,
    LoginRequest,
    LoginResponse,
    PasswordChange,
    UserCreate,
    UserList,
    UserUpdate,
    UserView,
    UserWithKey,
)
from wa_auth.service import AuthService
from wa_auth.throttle import ClientAddress
from wa_common.schemas import Caller

router = APIRouter(prefix="/internal", dependencies=[Depends(check_internal_token)])

Svc = Annotated[AuthService, Depends(get_service)]
Who = Annotated[Caller, Depends(get_caller)]
Client = Annotated[ClientAddress, Depends(client_address)]
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN)]
SKIP_MAX = 1_000_000_000


@router.get("/jwks")
async def jwks(service: Svc) -> dict[str, Any]:
    return service.jwks()


@router.post("/login", response_model=LoginResponse, response_model_by_alias=True)
async def login(body: LoginRequest, client: Client, service: Svc) -> LoginResponse:
    return await service.login(body.email, body.password, client)


@router.post("/api-keys/resolve", response_model=Identity)
async def resolve_api_key(body: ApiKeyResolveRequest, service: Svc) -> Identity:
    return await service.resolve_api_key(body.api_key)


@router.get("/identities/{user_id}", response_model=Identity)
async def identity(user_id: UserId, service: Svc) -> Identity:
    return await service.identity(user_id)


@router.get("/users", response_model=UserList)
async def list_users(
    caller: Who,
    service: Svc,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    skip: Annotated[int, Query(ge=0, le=SKIP_MAX)] = 0,
) -> UserList:
    return await service.list_users(caller, limit=limit, skip=skip)


@router.post("/users", response_model=UserWithKey, status_code=201)
async def create_user(body: UserCreate, caller: Who, service: Svc) -> UserWithKey:
    return await service.create_user(caller, body)


@router.get("/users/{user_id}", response_model=UserView)
async def get_user(user_id: UserId, caller: Who, service: Svc) -> UserView:
    return await service.get_user(caller, user_id)


@router.patch("/users/{user_id}", response_model=UserView)
@router.put("/users/{user_id}", response_model=UserView)
async def update_user(
    user_id: UserId, body: UserUpdate, caller: Who, client: Client, service: Svc
) -> UserView:
    return await service.update_user(caller, user_id, body, client)


@router.delete("/users/{user_id}", response_model=Deleted)
async def delete_user(user_id: UserId, caller: Who, service: Svc) -> Deleted:
    return await service.delete_user(caller, user_id)


@router.post("/users/{user_id}/api-key", response_model=ApiKeyView)
async def rotate_api_key(user_id: UserId, caller: Who, service: Svc) -> ApiKeyView:
    return await service.rotate_api_key(caller, user_id)


@router.put("/users/{user_id}/ip-allowlist", response_model=UserView)
async def set_ip_allowlist(user_id: UserId, body: IpAllowlistUpdate, caller: Who, service: Svc) -> UserView:
    return await service.set_ip_allowlist(caller, user_id, body.ip_allowlist)


@router.post("/password", status_code=204)
async def change_password(body: PasswordChange, caller: Who, client: Client, service: Svc) -> Response:
    await service.change_own_password(caller, body.current_password, body.new_password, client)
    return Response(status_code=204)
