"""Settings of the session-worker service (environment variables prefixed ``WORKER_``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from wa_common.settings import Profile
from wa_session_worker.engines.settings import EngineSettings


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(EngineSettings):
    """Worker settings. Durations are seconds; sizes are bytes.

    Lease timing (DESIGN.md, "Shards and ownership"): a worker renews its shard leases every
    ``lease_renew_s``; a lease not renewed for ``lease_ttl_s`` may be taken by another worker. A
    worker that could not renew stops the shard's sessions ``lease_safety_s`` before its lease can
    expire, so two workers never run the same session. Failover takes at most about
    ``lease_ttl_s + lease_renew_s`` plus the reconnect time.
    """

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True)

    port: int = Field(8084, ge=0, le=65535)
    database_url: str = "sqlite:///data/session-worker.db"

    id: str = Field(default_factory=_default_worker_id, description="unique worker id (WORKER_ID)")
    mongodb_url: str | None = Field(
        None, description="when set, instances/messages/contacts/activity live in MongoDB"
    )
    mongodb_database: str = "wa_session_worker"
    lease_ttl_s: float = Field(9.0, gt=0)
    lease_renew_s: float = Field(2.0, gt=0)
    lease_safety_s: float = Field(3.0, ge=0)
    session_start_concurrency: int = Field(8, ge=1, le=256)
    # At most 2^31 - 1: a sent file's size is stored in the messages table's INTEGER column.
    media_max_bytes: int = Field(64 * 1024 * 1024, ge=1, le=2**31 - 1)
    media_timeout_s: float = Field(30.0, gt=0)
    send_min_remaining_s: float = Field(
        2.0, ge=0, le=60, description="a send is not started with less time than this before its deadline (s)"
    )
    media_allow_private: bool | None = Field(
        None,
        description="allow media URLs on private addresses; unset = only in the embedded profile (dev)",
    )

    @property
    def media_private_allowed(self) -> bool:
        """Whether media URLs may resolve to private/loopback addresses (unset: embedded only),
        the same rule as the dispatcher's ``WEBHOOKS_ALLOW_PRIVATE_TARGETS``."""
        if self.media_allow_private is None:
            return self.profile == Profile.EMBEDDED
        return self.media_allow_private

    recent_events_max_age_s: float = Field(86400.0, gt=0)
    outbox_relay_interval_s: float = Field(
        2.0, gt=0, le=600, description="seconds between rounds of the outbox relay (unconfirmed events)"
    )
    outbox_grace_s: float = Field(
        5.0, ge=0, le=3600, description="age in seconds after which an unconfirmed event is relayed"
    )
    idempotency_ttl_s: float = Field(86400.0, gt=0)

    @model_validator(mode="after")
    def _check_lease_timing(self) -> WorkerSettings:
        if not (self.lease_renew_s + self.lease_safety_s < self.lease_ttl_s):
            raise ValueError("WORKER_LEASE_RENEW_S + WORKER_LEASE_SAFETY_S must be < WORKER_LEASE_TTL_S")
        return self
