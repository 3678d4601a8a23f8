"""Settings of the webhooks service (environment variables prefixed ``WEBHOOKS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wa_common.settings import Profile, StoreSettings


class WebhooksSettings(StoreSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    port: int = Field(8083, ge=0, le=65535)

    database_url: str = "sqlite:///data/webhooks.db"

    allow_private_targets: bool | None = Field(
        None,
        description="deliver to loopback/private/link-local addresses; unset = true only when "
        "WA_PROFILE=embedded (development), false otherwise",
    )
    attempt_timeout_s: float = Field(10.0, gt=0, le=300, description="timeout of one HTTP attempt (s)")
    max_in_flight: int = Field(500, ge=1, le=100_000, description="deliveries in flight per process")
    per_host_concurrency: int = Field(8, ge=1, le=1000, description="concurrent attempts per host:port")
    poll_interval_s: float = Field(0.5, gt=0, le=60, description="how often due deliveries are looked up (s)")
    lease_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how long a claimed delivery is reserved for this replica (s); "
        "at least 2 x (attempt_timeout_s + 5)",
    )
    retry_jitter: float = Field(0.1, ge=0, le=1, description="retry interval ± this fraction")
    retention_days: float = Field(
        30.0, ge=0, le=3650, description="days finished deliveries and their attempts are kept (0: forever)"
    )
    claim_batch: int = Field(200, ge=1, le=10_000, description="deliveries claimed per store round-trip")

    @property
    def private_targets_allowed(self) -> bool:
        """Whether the SSRF guard lets loopback/private targets through (see the field)."""
        if self.allow_private_targets is None:
            return self.profile == Profile.EMBEDDED
        return self.allow_private_targets
