"""Entry point: ``python -m wa_gateway [serve]``. Assembles the public REST API.

Routes (the reference's contract, ``spec/api-reference.md``): ``api/instances.py`` and
``api/messaging.py`` (both path families), ``api/stats.py``, ``api/admin.py``,
``api/webhooks.py``, ``api/sim.py`` (simulator only); authentication and user administration
come from ``wa_gateway.auth`` (``setup_auth``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.cors import CORSMiddleware

from wa_common.bus import PublishError, RequestTimeout
from wa_common.cli import run_cli
from wa_common.logs import get_logger
from wa_common.runtime import Runtime, create_app, serve
from wa_common.schemas.stats import STATS_LIMITS_STATE, LimitsStateQuery
from wa_gateway.api import admin, instances, live, messaging, sim, stats, webhooks
from wa_gateway.auth import setup_auth
from wa_gateway.backend import Backend
from wa_gateway.dashboard import mount_dashboard
from wa_gateway.errors import install_error_handlers
from wa_gateway.limits import BINDING, LimitBook
from wa_gateway.live import LiveHub
from wa_gateway.metering import MeteringMiddleware, UsageMeter
from wa_gateway.middleware import AccessLogMiddleware, BodySizeLimitMiddleware, SecurityHeadersMiddleware
from wa_gateway.ratelimit import RateLimiter
from wa_gateway.settings import GatewaySettings
from wa_gateway.state import Gateway

SERVICE = "gateway"
log = get_logger(__name__)

DESCRIPTION = """
Manage many WhatsApp accounts ("instances"): link them by QR code or pairing code, send and
receive messages and media, keep contacts and history, receive signed webhooks.

**Authentication.** Every route except `/api/auth/login`, `/healthz`, `/readyz`, `/metrics` and
the docs needs either `Authorization: Bearer <jwt>` (from `POST /api/auth/login`) or
`x-api-key: <api key>`. Administrator routes answer 403 to other users; an instance that is not
the caller's answers 404.

**QR codes.** `GET .../qr` answers 200 `{"qrCode": "<raw pairing string>", "expiresAt"}` when a
code is available (`expiresAt`, an extension: ISO 8601 UTC, when WhatsApp stops accepting it) and
**202** `{"message", "status"}` otherwise: `"generating"` while the session waits for one, or
`"logged_out"` when the instance is logged out (reconnect it to get a new code).
`?format=png` or `?format=svg` answers the rendered image (`image/png`, `image/svg+xml`) instead,
with `ETag` (equal for the same code) and `X-QR-Expires-At`.

**Idempotency.** Sends and `POST /api/instances` accept an `Idempotency-Key` header: a retry
with the same key returns the first result instead of sending (or creating) again.

**Errors.** Every failure is JSON `{"error": "<message>"}`; validation failures (400) add
`"details": [{"field", "message"}]` when a field is at fault (a body that is not JSON at all
says where it breaks: line and column). 429 (rate limit, daily usage limits `maxMessagesSent` and
`maxApiCalls`) and 503 (no worker answered in time) carry `Retry-After`; the `maxInstances` 429
does not: it holds while the user owns that many instances (delete one, or ask an administrator
to raise the limit).
""".strip()

PUBLIC_PATHS = frozenset({"/api/auth/login"})
BODY_ERRORS = {
    "408": "The request body stopped arriving (GATEWAY_BODY_IDLE_TIMEOUT_S / GATEWAY_BODY_TIMEOUT_S)",
    "413": "Request body too large",
}
GATEWAY_ERRORS = {
    "401": "Missing, invalid or expired token / API key",
    "403": "The client address is outside the user's IP allow-list (or the route needs the admin role)",
    "429": "Rate limit or usage limit exceeded, or too many invalid API keys (see Retry-After)",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with both auth schemes, 400 (not 422) for validation errors."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=None,
        servers=None,
    )
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.setdefault(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "JWT from POST /api/auth/login",
        },
    )
    schemes.setdefault(
        "apiKeyAuth",
        {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "the user's API key"},
    )
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault(
                    "400",
                    {
                        "description": "Invalid request",
                        "content": {"application/json": {"schema": error_ref}},
                    },
                )
            if path.startswith("/api") and path not in PUBLIC_PATHS:
                op.setdefault("security", [{"bearerAuth": []}, {"apiKeyAuth": []}])
                # Answered by gateway-wide layers on every authenticated route.
                for code, text in GATEWAY_ERRORS.items():
                    responses.setdefault(
                        code, {"description": text, "content": {"application/json": {"schema": error_ref}}}
                    )
            if "requestBody" in op:
                for code, text in BODY_ERRORS.items():
                    responses.setdefault(
                        code, {"description": text, "content": {"application/json": {"schema": error_ref}}}
                    )
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def build_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway service as an ASGI app (started and stopped by its lifespan)."""
    settings = settings or GatewaySettings()
    runtime = Runtime(SERVICE, settings, rpc=True)
    app = create_app(runtime, title="WhatsApp Multi-Instance API", description=DESCRIPTION)
    install_error_handlers(app)

    gateway_id = f"{socket.gethostname()}:{os.getpid()}"
    gw = Gateway(
        settings=settings,
        backend=Backend(runtime, settings),
        meter=UsageMeter(runtime, gateway_id, settings.usage_flush_s),
        limits=LimitBook(),
    )
    app.state.gateway = gw

    hub = LiveHub(runtime, queue_size=settings.stream_queue_size, linger_s=settings.stream_linger_s)
    app.state.live_hub = hub
    runtime.on_exit_requested(hub.close)

    setup_auth(app, runtime, settings, RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst))
    app.include_router(instances.router)
    app.include_router(messaging.instances_family)
    app.include_router(webhooks.router)
    app.include_router(messaging.whatsapp_family)
    app.include_router(stats.router)
    app.include_router(admin.router)
    app.include_router(live.router)
    mount_dashboard(app, settings)
    if settings.simulator_routes_enabled:
        app.include_router(sim.router)

    app.add_middleware(MeteringMiddleware, meter=gw.meter)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        idle_timeout_s=settings.body_idle_timeout_s,
        total_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "x-api-key",
                "Content-Type",
                "Idempotency-Key",
                "x-correlation-id",
            ],
            expose_headers=["Retry-After", "x-correlation-id", "ETag", "X-QR-Expires-At"],
            max_age=600,
        )
    if settings.access_log:  # outermost: every answer is logged, a 413 or a CORS preflight too
        app.add_middleware(AccessLogMiddleware)

    async def load_limits() -> None:
        """Ask stats for the blocks in force; retried until stats answers (it may start later)."""
        delay = 0.5
        while True:
            try:
                reply = await gw.backend.stats(
                    STATS_LIMITS_STATE, None, LimitsStateQuery().dump(), timeout_s=3.0
                )
            except (RequestTimeout, PublishError) as exc:
                log.info("stats not answering yet; limits state will be loaded later", error=str(exc))
            else:
                if reply.ok and isinstance(reply.data, dict):
                    n = gw.limits.load(list(reply.data.get("blocked") or []))
                    log.info("limits state loaded", blocked=n)
                    return
                log.warning("stats refused the limits state query", error=reply.error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    @runtime.on_start
    async def start_gateway() -> None:
        assert runtime.bus is not None
        await runtime.bus.consume_transient([BINDING], gw.limits.on_delivery, name_prefix="wa.gateway.limits")
        runtime.tasks.spawn(load_limits(), name="gateway-load-limits")
        runtime.tasks.spawn(gw.meter.run(), name="gateway-usage-meter")

    @runtime.on_stop
    async def stop_gateway() -> None:
        await gw.meter.flush()

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign,unused-ignore]
    return app


def main() -> None:
    settings = GatewaySettings()
    run_cli(SERVICE, serve=lambda: serve(build_app(settings), settings, service=SERVICE))
