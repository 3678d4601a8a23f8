"""Gateway authentication (issue 3): the caller's identity for every route.

Interface used by the rest of the gateway (kept stable):
- ``setup_auth(app, runtime, settings, rate)``: registers start/stop hooks and includes the auth
  and user-administration routes.
- ``get_caller``: FastAPI dependency returning the authenticated ``Caller`` (401 otherwise),
  within its request rate (429 otherwise).
- ``require_admin``: FastAPI dependency returning the ``Caller`` if it is an admin (403 otherwise).
Errors are raised as ``fastapi.HTTPException(status, detail="human-readable message")``.
"""

from wa_gateway.auth.dependencies import get_caller, require_admin
from wa_gateway.auth.setup import setup_auth

__all__ = ["get_caller", "require_admin", "setup_auth"]
