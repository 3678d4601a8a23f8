"""ASGI middleware every FastAPI service installs: correlation id and HTTP RED metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming bodies and background tasks are unaffected.
The ``route`` label is the matched route template (``/api/instances/{instance_id}``), never the
raw path; unmatched requests are labelled ``unmatched``. The request's correlation id is also
kept in ``request.state.correlation_id``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_common.logs import correlation_scope
from wa_common.metrics import HTTP_IN_FLIGHT, HTTP_REQUESTS, HTTP_SECONDS

CORRELATION_HTTP_HEADER = b"x-correlation-id"
_UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz"})


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
