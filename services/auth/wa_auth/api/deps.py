"""Dependencies of the internal routes: the shared token, the caller, the client, the service.

- ``x-internal-token``: must equal ``AUTH_INTERNAL_TOKEN`` when one is set (else 401).
- ``x-wa-caller``: ``{"user_id", "role"}`` JSON set by the gateway; 401 when absent, 400 when it
  is not a caller identity (``user_id`` must be 1-64 of ``[0-9A-Za-z_-]``).
- ``x-wa-client-ip``: the end client's address as the gateway saw it; anything that is not an
  IP address is ignored (the address is then unknown).
"""

from __future__ import annotations

import hmac

from fastapi import Header, HTTPException, Request
from pydantic import ValidationError

from wa_auth.service import AuthService
from wa_auth.throttle import ClientAddress, normalise_address
from wa_common.ids import is_id
from wa_common.schemas import Caller

INTERNAL_TOKEN_HEADER = "x-internal-token"  # noqa: S105 (a header name)
CALLER_HEADER = "x-wa-caller"
CLIENT_IP_HEADER = "x-wa-client-ip"
TOKEN_REJECTED_HEADER = "x-internal-token-rejected"  # noqa: S105 (a header name)


def get_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth_service
    return service


async def check_internal_token(
    request: Request, x_internal_token: str | None = Header(None, include_in_schema=False)
) -> None:
    """401 unless the request carries ``AUTH_INTERNAL_TOKEN`` (when one is configured)."""
    expected: str = request.app.state.internal_token
    if expected and not hmac.compare_digest((x_internal_token or "").encode(), expected.encode()):
        # The header tells the gateway its own configuration is wrong (it answers 503, not 401).
        raise HTTPException(
            401, detail="missing or wrong internal token", headers={TOKEN_REJECTED_HEADER: "1"}
        )


async def get_caller(x_wa_caller: str | None = Header(None, include_in_schema=False)) -> Caller:
    """The caller the gateway authenticated (header ``x-wa-caller``: ``{"user_id", "role"}`` JSON)."""
    if not x_wa_caller:
        raise HTTPException(401, detail="no caller identity (x-wa-caller) on an internal call")
    try:
        caller = Caller.from_bytes(x_wa_caller)
    except (ValidationError, ValueError) as exc:
        raise HTTPException(400, detail="x-wa-caller: not a caller identity") from exc
    if not is_id(caller.user_id):
        raise HTTPException(400, detail="x-wa-caller: not a caller identity")
    return caller


def client_address(request: Request) -> ClientAddress:
    """The end client's address as the gateway reported it (``x-wa-client-ip``; ``None`` when
    absent or not an IP address), with the TCP peer's address."""
    return ClientAddress(
        address=normalise_address(request.headers.get(CLIENT_IP_HEADER, "")[:64]),
        peer=request.client.host if request.client else None,
    )
