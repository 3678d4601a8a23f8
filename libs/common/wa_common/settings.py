"""Settings base for every service, on pydantic-settings.

Conventions:
- Settings shared by all services are read from global names (``WA_PROFILE``, ``AMQP_URL``,
  ``LOG_LEVEL``, ``LOG_FORMAT``, ``WA_SHARDS``, ``BUS_PREFETCH``, ``BUS_DELIVERY_LIMIT``,
  ``BUS_CONNECT_TIMEOUT_S``).
- Settings of one service carry that service's prefix (``GATEWAY_PORT``, ``AUTH_DATABASE_URL``,
  ``WORKER_ID``...), declared by ``model_config = SettingsConfigDict(env_prefix=...)`` in the
  service's own subclass.
- ``WA_PROFILE`` is ``production`` unless set: outside ``embedded`` and ``dev`` a service refuses
  to start while any setting named by :meth:`ServiceSettings.insecure_defaults` still holds its
  shipped default (secure by default; ``make run`` sets ``embedded``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Marker of values to replace in the shipped templates; refused outside embedded/dev.
PLACEHOLDER = "CHANGE-ME"


class Profile(StrEnum):
    """Deployment profile: ``embedded`` (``make run`` on one machine), ``dev``, ``production``."""

    EMBEDDED = "embedded"
    DEV = "dev"
    PRODUCTION = "production"


class InsecureSettingsError(ValueError):
    """A production-profile service was started with shipped (insecure) defaults."""


def _global(name: str) -> AliasChoices:
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses add their own with an ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    profile: Profile = Field(Profile.PRODUCTION, validation_alias=_global("WA_PROFILE"))
    amqp_url: str = Field(DEFAULT_AMQP_URL, validation_alias=_global("AMQP_URL"))
    log_level: str = Field("INFO", validation_alias=_global("LOG_LEVEL"))
    log_format: Literal["json", "console"] = Field("json", validation_alias=_global("LOG_FORMAT"))
    shard_count: int = Field(64, ge=1, le=4096, validation_alias=_global("WA_SHARDS"))
    bus_prefetch: int = Field(32, ge=1, le=10_000, validation_alias=_global("BUS_PREFETCH"))
    bus_delivery_limit: int = Field(5, ge=1, le=100, validation_alias=_global("BUS_DELIVERY_LIMIT"))
    bus_connect_timeout_s: float = Field(30.0, gt=0, validation_alias=_global("BUS_CONNECT_TIMEOUT_S"))
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    shutdown_timeout_s: float = Field(25.0, gt=0)

    @property
    def relaxed(self) -> bool:
        """True in the ``embedded`` and ``dev`` profiles, where shipped defaults are tolerated."""
        return self.profile in (Profile.EMBEDDED, Profile.DEV)

    def insecure_defaults(self) -> list[str]:
        """Names of settings still holding an insecure shipped default. Subclasses extend this."""
        bad: list[str] = []
        if self.amqp_url == DEFAULT_AMQP_URL:
            bad.append("AMQP_URL (guest/guest)")
        return bad

    def placeholders(self) -> list[str]:
        """Settings whose value still contains the deployment templates' ``CHANGE-ME`` marker
        (``deploy/k8s/base/secret.yaml``, ``.env.example``), e.g. a database URL whose password
        nobody replaced. Names are given in their environment form; values are never shown."""
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        found: list[str] = []
        for name, value in self:
            if isinstance(value, str) and PLACEHOLDER in value.upper():
                field = type(self).model_fields[name]
                alias = field.validation_alias
                env = (
                    str(alias.choices[0])
                    if isinstance(alias, AliasChoices)
                    else alias
                    if isinstance(alias, str)
                    else f"{prefix}{name.upper()}"
                )
                found.append(f"{env} (template placeholder {PLACEHOLDER})")
        return found

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> ServiceSettings:
        if not self.relaxed:
            bad = self.insecure_defaults() + self.placeholders()
            if bad:
                raise InsecureSettingsError(
                    f"WA_PROFILE={self.profile.value} refuses insecure defaults: {', '.join(bad)}. "
                    "Set them, or use WA_PROFILE=embedded/dev on a development machine."
                )
        return self


class StoreSettings(ServiceSettings):
    """Settings of a service that owns a relational store (``<PREFIX>DATABASE_URL``)."""

    database_url: str = Field(
        "sqlite:///data/service.db",
        description="SQLAlchemy URL of this service's store (postgresql://... or sqlite:///path)",
    )
