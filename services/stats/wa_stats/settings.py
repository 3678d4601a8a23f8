"""Settings of the stats service (environment variables prefixed ``STATS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wa_common.settings import StoreSettings


class StatsSettings(StoreSettings):
    model_config = SettingsConfigDict(env_prefix="STATS_", extra="ignore", populate_by_name=True)

    port: int = Field(8082, ge=0, le=65535)

    database_url: str = "sqlite:///data/stats.db"
    dedup_retention_days: float = Field(
        7.0,
        gt=0,
        description="days an event id is remembered for deduplication (longer than any redelivery)",
    )
    maintenance_interval_s: float = Field(
        30.0,
        gt=0,
        description="seconds between maintenance rounds: re-publish unpublished limit events, prune ids",
    )
