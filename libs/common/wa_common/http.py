"""ASGI middleware every FastAPI service installs (``runtime.create_app``): correlation id and
HTTP RED metrics (:class:`ObservabilityMiddleware`), and safe answers to unexpected errors
(:class:`SafeErrorsMiddleware`).

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming bodies and background tasks are unaffected.
The ``route`` label is the matched route template (``/api/instances/{instance_id}``), never the
raw path; unmatched requests are labelled ``unmatched``. The request's correlation id is also
kept in ``request.state.correlation_id``.
"""

from __future__ import annotations

import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_common.logs import correlation_scope, exception_fields, get_correlation_id, get_logger
from wa_common.metrics import HTTP_IN_FLIGHT, HTTP_REQUESTS, HTTP_SECONDS

CORRELATION_HTTP_HEADER = b"x-correlation-id"
_UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz"})

log = get_logger(__name__)


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(CORRELATION_HTTP_HEADER)
        # Accept a caller's id only if it is short and printable (it ends up in logs).
        cid = incoming.decode("latin-1") if incoming and len(incoming) <= 64 and incoming.isascii() else None
        status = 500
        started = time.perf_counter()
        HTTP_IN_FLIGHT.inc()
        with correlation_scope(cid) as bound:
            # Kept on the request's state too: a catch-all 500 handler runs in Starlette's
            # outermost middleware, outside this scope, and still names the id.
            scope.setdefault("state", {})["correlation_id"] = bound

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((CORRELATION_HTTP_HEADER, bound.encode()))
                    message["headers"] = headers
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                HTTP_IN_FLIGHT.dec()
                path = scope.get("path", "")
                if path not in _UNTRACKED:
                    route = scope.get("route")
                    template = getattr(route, "path", None) or "unmatched"
                    method = scope.get("method", "GET")
                    HTTP_REQUESTS.labels(method, template, str(status)).inc()
                    HTTP_SECONDS.labels(method, template).observe(time.perf_counter() - started)


class SafeErrorsMiddleware:
    """Answers an exception no handler took with 500 ``{"error": "Internal server error
    (correlation id <id>)"}`` and logs it with ``exception_fields`` (types, SQLSTATE codes,
    frames; never its message, which may carry SQL parameters, secrets or input). The exception
    is not re-raised, so the server does not log it with its message either. Installed innermost
    (inside the correlation scope); a response already started is left to the server to end."""

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
            route = getattr(scope.get("route"), "path", None)
            log.error("unhandled error", method=scope.get("method"), route=route, **exception_fields(exc))
            if started:
                return
            body = {"error": f"Internal server error (correlation id {get_correlation_id()})"}
            await JSONResponse(body, status_code=500)(scope, receive, send)
