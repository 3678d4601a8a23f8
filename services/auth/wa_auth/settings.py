"""Settings of the auth service (environment variables prefixed ``AUTH_``).

The reference's own names stay unprefixed: ``ADMIN_EMAIL``, ``ADMIN_PASSWORD``,
``ADMIN_FIRST_NAME``, ``ADMIN_LAST_NAME`` (the administrator seeded at first start) and
``JWT_EXPIRATION`` (token lifetime such as ``24h``, ``30m``, ``7d`` or plain seconds).

Password-check throttling (``AUTH_LOGIN_*``, see ``wa_auth.throttle``) covers logins and the
``currentPassword`` of password changes alike; "per email" means per account. A settings error
never shows the offending value (``hide_input_in_errors``): it may be a password or a secret.
"""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from wa_common.settings import StoreSettings

DEFAULT_ADMIN_PASSWORD = "admin123"  # noqa: S105 (the reference's shipped default, refused in production)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(value: str | int | float) -> int:
    """Seconds in ``value``: ``3600``, ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"1w"``.

    Raises ``ValueError`` for anything else or for a duration that is not positive.
    """
    if isinstance(value, int | float):
        seconds = int(value)
    else:
        match = _DURATION.match(value.lower())
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 30m, 24h, 7d)")
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds


class AuthSettings(StoreSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTH_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    port: int = Field(8081, ge=0, le=65535)

    database_url: str = "sqlite:///data/auth.db"

    # The administrator created when the store has no user yet (reference names, unprefixed).
    admin_email: str = Field("admin@example.com", validation_alias=AliasChoices("ADMIN_EMAIL"))
    admin_password: str = Field(
        DEFAULT_ADMIN_PASSWORD, min_length=1, validation_alias=AliasChoices("ADMIN_PASSWORD")
    )
    admin_first_name: str = Field("Admin", validation_alias=AliasChoices("ADMIN_FIRST_NAME"))
    admin_last_name: str = Field("User", validation_alias=AliasChoices("ADMIN_LAST_NAME"))

    # Tokens.
    jwt_expiration_s: int = Field(
        86400, validation_alias=AliasChoices("JWT_EXPIRATION"), description="token lifetime"
    )
    jwt_issuer: str = "wa-auth"
    jwt_audience: str = "wa-api"
    jwt_private_key: str = Field("", description="Ed25519 private key, PEM (PKCS#8)")
    jwt_private_key_file: str = Field("", description="path of a PEM file with the Ed25519 private key")
    jwt_previous_public_keys: str = Field(
        "", description="PEM public keys of retired signing keys, still published so their tokens verify"
    )

    # API keys: encrypted (AES-256-GCM) and looked up by HMAC-SHA256, both keyed from this secret.
    api_key_secret: str = Field("", description="at least 32 characters of secret material")

    # Shared token the gateway sends on internal calls (header x-internal-token).
    internal_token: str = ""

    # Where generated material lives when no key/secret is configured (embedded/dev profiles only).
    data_dir: str = "data"

    # Throttling of password checks, login and password change alike (failures counted in the
    # auth store, so across replicas): seconds of the window, failures per account, per address.
    login_window_s: int = Field(60, ge=1)
    login_max_failures_per_email: int = Field(10, ge=1)
    login_max_failures_per_ip: int = Field(50, ge=1)

    @field_validator("jwt_expiration_s", mode="before")
    @classmethod
    def _duration(cls, value: str | int | float) -> int:
        return parse_duration_s(value)

    @field_validator("api_key_secret")
    @classmethod
    def _secret_length(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("AUTH_API_KEY_SECRET must be at least 32 characters")
        return value

    def insecure_defaults(self) -> list[str]:
        bad = super().insecure_defaults()
        if self.admin_password == DEFAULT_ADMIN_PASSWORD:
            bad.append("ADMIN_PASSWORD (admin123)")
        if not (self.jwt_private_key or self.jwt_private_key_file):
            bad.append("AUTH_JWT_PRIVATE_KEY or AUTH_JWT_PRIVATE_KEY_FILE (unset)")
        if not self.api_key_secret:
            bad.append("AUTH_API_KEY_SECRET (unset)")
        if not self.internal_token:
            bad.append("AUTH_INTERNAL_TOKEN (unset)")
        return bad
