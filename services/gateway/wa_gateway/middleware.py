"""ASGI middleware of the gateway: access log, security headers and request body size limits.

All are pure ASGI (no ``BaseHTTPMiddleware``), so uploads stream through untouched.

- Access log (``GATEWAY_ACCESS_LOG``, on by default): one INFO line per request from the logger
  ``wa_gateway.access`` (event ``request``) when its response has ended (for the live-event
  stream: when the stream closes, ``duration_ms`` being how long it was open), with ``method``,
  ``route`` (the matched route's path template, e.g. ``/api/instances/{instanceId}``, or
  ``unmatched``; never the raw path, which carries ids, nor the query string, which may carry
  secrets), ``status``, ``duration_ms``, ``correlation_id`` and ``user_id`` when the caller was
  authenticated. It reads what the other layers already put on the request scope: the route
  (the router), ``state.correlation_id`` (``wa_common.http.ObservabilityMiddleware``) and
  ``state.caller`` (``auth.get_caller``). ``/healthz``, ``/readyz`` and ``/metrics`` are not
  logged. No header is ever logged (``Authorization``, ``x-api-key``).

- Security headers on every response: ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``,
  ``Strict-Transport-Security`` (honoured by browsers over HTTPS only), and on ``/api`` routes
  ``Cache-Control: no-store`` and a ``Content-Security-Policy`` that allows nothing; on the
  dashboard (``/``, ``/dashboard/``) a policy that allows only its own files (``/docs`` keeps
  its CDN scripts).
- Body limits: ``GATEWAY_MAX_BODY_BYTES`` for every request, ``GATEWAY_MAX_UPLOAD_BYTES`` (plus
  64 KiB for the multipart envelope) for ``/send-file``. A declared ``Content-Length`` above the
  limit is refused before reading; a body that grows past it while streaming is cut off. Both
  answer 413 with the JSON error shape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_common.logs import get_logger
from wa_common.schemas import Caller
from wa_gateway.errors import error_response

access_log = get_logger("wa_gateway.access")
ACCESS_LOG_SKIPPED = frozenset({"/healthz", "/readyz", "/metrics"})

MULTIPART_OVERHEAD = 64 * 1024

_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
_API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The dashboard (``/`` and ``/dashboard/``): its own files only; QR images arrive as blob: URLs.
_DASHBOARD_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; script-src 'self'; "
        b"style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
]


def _extra_headers(path: str) -> list[tuple[bytes, bytes]]:
    if path.startswith("/api"):
        return _COMMON_HEADERS + _API_HEADERS
    if path == "/" or path.startswith("/dashboard/"):
        return _COMMON_HEADERS + _DASHBOARD_HEADERS
    return _COMMON_HEADERS


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _extra_headers(scope.get("path", ""))

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body too large: the limit is {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, reason: str) -> None:
        super().__init__(408, f"Request body timeout: {reason}")


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        idle_timeout_s: float = 10.0,
        total_timeout_s: float = 120.0,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s

    def limit_for(self, path: str) -> int:
        if path.endswith("/send-file"):
            return self.max_upload + MULTIPART_OVERHEAD
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                shown = self.max_upload if limit > self.max_body else limit
                response = error_response(413, f"Request body too large: the limit is {shown} bytes")
                await response(scope, receive, send)
                return
        received = 0
        complete = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout_s

        async def receive_wrapper() -> Message:
            nonlocal received, complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BodyTimeout(f"the body did not arrive within {self.total_timeout_s:g} s")
            try:
                # asyncio.timeout, not wait_for: no task per chunk on every request's hot path.
                async with asyncio.timeout(min(self.idle_timeout_s, remaining)):
                    message = await receive()
            except TimeoutError:
                if loop.time() >= deadline:
                    raise BodyTimeout(f"the body did not arrive within {self.total_timeout_s:g} s") from None
                raise BodyTimeout(f"no data for {self.idle_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(self.max_upload if limit > self.max_body else limit)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, receive_wrapper, send)


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (``unmatched`` when none did); a mounted app
    (the dashboard's files) is ``<mount path>/{path}``, never the file asked for."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return "unmatched"
    router = getattr(scope.get("app"), "router", None)
    for candidate in getattr(router, "routes", ()):  # a plain Starlette route (/docs, /openapi.json)
        if getattr(candidate, "endpoint", None) is endpoint:
            found = getattr(candidate, "path", None)
            if isinstance(found, str) and found:
                return found
    # A Mount leaves no route, but its prefix in root_path (beyond the app's own root path).
    root, app_root = str(scope.get("root_path") or ""), str(scope.get("app_root_path") or "")
    if root.startswith(app_root) and len(root) > len(app_root):
        return f"{root[len(app_root) :].rstrip('/')}/{{path}}"
    return "unmatched"


class AccessLogMiddleware:
    """One log line per answered request (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in ACCESS_LOG_SKIPPED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception that escapes the app is answered 500 by Starlette's outermost layer.
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state = scope.get("state") or {}
            fields: dict[str, Any] = {
                "method": scope.get("method", "GET"),
                "route": route_template(scope),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            cid = state.get("correlation_id")
            if isinstance(cid, str):
                fields["correlation_id"] = cid
            caller = state.get("caller")
            if isinstance(caller, Caller):
                fields["user_id"] = caller.user_id
            access_log.info("request", **fields)
