"""Error bodies of the auth service: ``{"error": "<message>", "details": [{field, message}]}``.

- :class:`~wa_auth.errors.AuthError`: its status and message (``details`` when it names a
  field, ``Retry-After`` for 429).
- Request validation: 400, one detail per problem, ``field`` being the camelCase name (``body``
  for the body as a whole). Submitted values are never echoed, and a field name that is not
  printable text (an unknown key carrying NUL or a lone surrogate) is shown escaped and cut to
  :data:`FIELD_NAME_MAX` characters, so an answer can always be encoded.
- Anything else: 500 with the correlation id, answered and logged without the exception's
  message (which may carry password hashes or sealed API keys) by
  ``wa_common.http.SafeErrorsMiddleware``, which every service installs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wa_auth.errors import AuthError
from wa_auth.schemas import printable
from wa_common.logs import get_logger
from wa_common.schemas.wire import field_path

log = get_logger(__name__)

FIELD_NAME_MAX = 64


def _field(loc: tuple[int | str, ...]) -> str:
    return printable(field_path(loc, root="body"), FIELD_NAME_MAX)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
        body: dict[str, Any] = {"error": exc.message}
        if exc.field is not None:
            body["details"] = [{"field": exc.field, "message": exc.detail}]
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": _field(tuple(e.get("loc", ()))),
                "message": printable(str(e.get("msg", "")).removeprefix("Value error, "), 500),
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:10]) or "invalid request"
        return JSONResponse({"error": message, "details": details[:50]}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
