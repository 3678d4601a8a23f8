"""ASGI middleware of the gateway: security headers and request body size limits.

Both are pure ASGI (no ``BaseHTTPMiddleware``), so uploads stream through untouched.

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

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_gateway.errors import error_response

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
                message = await asyncio.wait_for(receive(), min(self.idle_timeout_s, remaining))
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
