"""Error bodies of the auth service: ``{"error": "<message>", "details": [{field, message}]}``.

- :class:`~wa_auth.errors.AuthError`: its status and message (``details`` when it names a
  field, ``Retry-After`` for 429).
- Request validation: 400, one detail per problem, ``field`` being the camelCase name (``body``
  for the body as a whole). Submitted values are never echoed, and a field name that is not
  printable text (an unknown key carrying NUL or a lone surrogate) is shown escaped and cut to
  :data:`FIELD_NAME_MAX` characters, so an answer can always be encoded.
- Anything else: 500 ``{"error": "internal error (correlation id <id>)"}``, answered by
  :class:`SafeErrorsMiddleware` inside the correlation scope. It logs the exception's type,
  its causes' types and the traceback's frames (file, line, function) but never an exception
  message, which may carry SQL parameters (password hashes, sealed API keys) or input; and the
  exception is not re-raised, so the server does not log it with its message either.
"""

from __future__ import annotations

import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_auth.errors import AuthError
from wa_auth.schemas import printable
from wa_common.logs import get_correlation_id, get_logger

log = get_logger(__name__)

FIELD_NAME_MAX = 64


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return printable(".".join(parts) or "body", FIELD_NAME_MAX)


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """What may be logged about ``exc``: types and frames, no messages (they can hold secrets)."""
    causes: list[str] = []
    inner = exc.__cause__ or exc.__context__
    while inner is not None and len(causes) < 5:
        causes.append(f"{type(inner).__module__}.{type(inner).__qualname__}")
        inner = inner.__cause__ or inner.__context__
    frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    return {
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "causes": causes,
        "frames": frames[-12:],
    }


class SafeErrorsMiddleware:
    """Answers an unhandled exception with a 500 naming the correlation id; logs it without its
    message (see the module docstring). Installed innermost, inside the correlation scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            cid = get_correlation_id()
            log.error(
                "unhandled error",
                method=scope.get("method"),
                route=getattr(scope.get("route"), "path", None),
                **describe_exception(exc),
            )
            if started:
                return  # nothing more can be said; the server ends the response
            response = JSONResponse({"error": f"internal error (correlation id {cid})"}, status_code=500)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    # Innermost user middleware: inside the observability middleware's correlation scope.
    app.user_middleware.append(Middleware(SafeErrorsMiddleware))

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
