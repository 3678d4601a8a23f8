"""FastAPI dependencies resolving the caller.

``get_caller`` authenticates with ``Authorization: Bearer <jwt>`` (preferred when both are sent)
or ``x-api-key``; it never reads identity from any other client header. The result is kept on
``request.state.caller`` so further dependencies in the same request reuse it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from wa_common.schemas import Caller
from wa_gateway.auth.layer import AuthLayer


def auth_layer(request: Request) -> AuthLayer:
    layer: AuthLayer = request.app.state.auth_layer
    return layer


async def get_caller(request: Request) -> Caller:
    """The authenticated caller within its request rate; 401 (no/bad credentials), 403 (IP not
    allowed), 429 (rate limit, or too many invalid API keys from the address), 503 (auth down)."""
    cached = getattr(request.state, "caller", None)
    if isinstance(cached, Caller):
        return cached
    layer = auth_layer(request)
    caller = await layer.authenticate(request)
    layer.admit(caller)
    request.state.caller = caller
    return caller


async def require_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The caller if it has the admin role; 403 otherwise (401 as :func:`get_caller`)."""
    if not caller.is_admin:
        raise HTTPException(403, detail="this operation needs the admin role")
    return caller


def client_ip(request: Request) -> str | None:
    """The client's address (``X-Forwarded-For`` believed only from ``GATEWAY_TRUSTED_PROXIES``)."""
    return auth_layer(request).client_ip(request)
