"""Settings of the gateway service (environment variables prefixed ``GATEWAY_``)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wa_common.settings import Profile
from wa_gateway.auth.settings import AuthClientSettings


class GatewaySettings(AuthClientSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    port: int = Field(8080, ge=0, le=65535)
    rpc_timeout_s: float = Field(
        10.0, gt=0, le=120, description="seconds to wait for a worker/stats/dispatcher reply (then 503)"
    )
    max_upload_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="largest file accepted by /send-file (413 above)"
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest JSON request body (413 above); uploads use max_upload_bytes",
    )
    body_idle_timeout_s: float = Field(
        10.0, gt=0, le=600, description="seconds a request body may pause between chunks (then 408)"
    )
    body_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="seconds a whole request body may take to arrive (then 408)"
    )
    cors_origins: str = Field(
        "", description="comma-separated allowed CORS origins ('*' for any); empty disables CORS"
    )
    rate_limit_per_s: float = Field(
        50.0, ge=0, description="requests per second per API key/token (token bucket per replica); 0 = off"
    )
    rate_limit_burst: int = Field(100, ge=1, description="token bucket size (burst) per API key/token")
    usage_flush_s: float = Field(1.0, gt=0, le=60, description="seconds between API-usage batches to stats")
    allow_private_webhook_urls: bool | None = Field(
        None,
        description="accept webhook URLs on loopback/private/link-local addresses; unset = true only "
        "when WA_PROFILE=embedded (as WEBHOOKS_ALLOW_PRIVATE_TARGETS)",
    )
    dashboard: bool = Field(True, description="serve the web dashboard at / (static files under /dashboard/)")
    access_log: bool = Field(
        True,
        description="log one line per request (method, route template, status, duration, correlation "
        "id, user id); not for /healthz, /readyz, /metrics",
    )
    stream_heartbeat_s: float = Field(
        15.0, gt=0, le=300, description="seconds between SSE keep-alive comments on /api/events/stream"
    )
    stream_linger_s: float = Field(
        10.0, ge=0, le=3600, description="seconds the live-event consumer outlives its last stream client"
    )
    stream_queue_size: int = Field(
        256, ge=8, le=100_000, description="events buffered per live-stream client before it is cut off"
    )
    simulator_routes: bool | None = Field(
        None, description="expose /api/admin/sim/*; default: on when WA_ENGINE=simulator"
    )

    @property
    def simulator_routes_enabled(self) -> bool:
        """Simulator-only admin routes: explicit setting, else on when ``WA_ENGINE`` is simulator."""
        if self.simulator_routes is not None:
            return self.simulator_routes
        return os.environ.get("WA_ENGINE", "simulator").strip().lower() == "simulator"

    @property
    def private_webhook_urls_allowed(self) -> bool:
        if self.allow_private_webhook_urls is None:
            return self.profile == Profile.EMBEDDED
        return self.allow_private_webhook_urls

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
