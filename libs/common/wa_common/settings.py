"""Settings base for every service, on pydantic-settings.

Conventions:
- Settings shared by all services are read from global names (``WA_PROFILE``, ``AMQP_URL``,
  ``LOG_LEVEL``, ``LOG_FORMAT``, ``WA_SHARDS``, ``BUS_PREFETCH``, ``BUS_DELIVERY_LIMIT``,
  ``BUS_CONNECT_TIMEOUT_S``, ``BUS_DEAD_LETTER_MAX_LENGTH``, ``BUS_DEAD_LETTER_MAX_BYTES``).
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
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wa_common.bus.topology import DEFAULT_DEAD_LETTER_MAX_BYTES, DEFAULT_DEAD_LETTER_MAX_LENGTH

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Credentials that ship with RabbitMQ, PostgreSQL, MongoDB images and our own examples: refused
# in any URL setting (user, password) outside embedded/dev, whatever the host.
SHIPPED_CREDENTIALS = frozenset(
    {
        ("guest", "guest"),
        ("postgres", "postgres"),
        ("wa", "wa"),
        ("admin", "admin"),
        ("root", "root"),
        ("root", "example"),
        ("mongo", "mongo"),
        ("user", "password"),
    }
)
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
    bus_dead_letter_max_length: int = Field(
        DEFAULT_DEAD_LETTER_MAX_LENGTH,
        ge=1,
        le=100_000_000,
        validation_alias=_global("BUS_DEAD_LETTER_MAX_LENGTH"),
    )
    bus_dead_letter_max_bytes: int = Field(
        DEFAULT_DEAD_LETTER_MAX_BYTES,
        ge=1024 * 1024,
        le=1024**4,
        validation_alias=_global("BUS_DEAD_LETTER_MAX_BYTES"),
    )
    bus_event_batch_max: int = Field(64, ge=1, le=1000, validation_alias=_global("BUS_EVENT_BATCH_MAX"))
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    shutdown_timeout_s: float = Field(25.0, gt=0)

    @property
    def relaxed(self) -> bool:
        """True in the ``embedded`` and ``dev`` profiles, where shipped defaults are tolerated."""
        return self.profile in (Profile.EMBEDDED, Profile.DEV)

    def insecure_defaults(self) -> list[str]:
        """Names of settings still holding an insecure shipped default: any URL setting whose
        user and password are a pair from :data:`SHIPPED_CREDENTIALS` (``guest:guest`` on any
        host, ...). Subclasses extend this."""
        bad: list[str] = []
        for name, value in self:
            if isinstance(value, str) and "://" in value and _has_shipped_credentials(value):
                bad.append(f"{self._env_name(name)} (shipped credentials)")
        return bad

    def _env_name(self, name: str) -> str:
        """The environment variable a field is read from (its global alias or prefixed name)."""
        alias = type(self).model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        if isinstance(alias, str):
            return alias
        return f"{str(self.model_config.get('env_prefix', '')).upper()}{name.upper()}"

    def placeholders(self) -> list[str]:
        """Settings whose value still contains the deployment templates' ``CHANGE-ME`` marker
        (``deploy/k8s/base/secret.yaml``, ``.env.example``), e.g. a database URL whose password
        nobody replaced. Names are given in their environment form; values are never shown."""
        return [
            f"{self._env_name(name)} (template placeholder {PLACEHOLDER})"
            for name, value in self
            if isinstance(value, str) and PLACEHOLDER in value.upper()
        ]

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


def _has_shipped_credentials(url: str) -> bool:
    """True if ``url``'s user info is a shipped (user, password) pair, or ``guest`` with any or no
    password (RabbitMQ's guest account)."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return False
    if user is None:
        return False
    user, password = unquote(user).lower(), unquote(password or "")
    return user == "guest" or (user, password.lower()) in SHIPPED_CREDENTIALS


class StoreSettings(ServiceSettings):
    """Settings of a service that owns a relational store (``<PREFIX>DATABASE_URL``)."""

    database_url: str = Field(
        "sqlite:///data/service.db",
        description="SQLAlchemy URL of this service's store (postgresql://... or sqlite:///path)",
    )
