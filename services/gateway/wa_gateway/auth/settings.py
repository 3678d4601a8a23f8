"""Gateway settings for authentication (prefix ``GATEWAY_``), mixed into ``GatewaySettings``."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from wa_common.settings import ServiceSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> list[IPNetwork]:
    """Comma-separated addresses/CIDRs to networks; raises ``ValueError`` naming a bad entry."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in value.split(",")):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from exc
    return networks


class AuthClientSettings(ServiceSettings):
    """How the gateway reaches auth and checks callers.

    ``auth_url``: base URL of the auth service. ``auth_internal_token``: the shared secret sent as
    ``x-internal-token`` (must equal ``AUTH_INTERNAL_TOKEN``; required in production).
    ``jwt_issuer``/``jwt_audience`` must equal auth's ``AUTH_JWT_ISSUER``/``AUTH_JWT_AUDIENCE``.
    ``trusted_proxies``: comma-separated CIDRs of reverse proxies whose ``X-Forwarded-For`` is
    believed when finding the client address (empty: the TCP peer is the client).
    ``auth_failures_per_min``: unknown API keys a client address may present per minute (token
    bucket per replica, burst of the same size) before the gateway answers 429 without asking auth.
    """

    auth_url: str = "http://127.0.0.1:8081"
    auth_timeout_s: float = Field(5.0, gt=0)
    auth_internal_token: str = ""
    jwt_issuer: str = "wa-auth"
    jwt_audience: str = "wa-api"
    jwt_leeway_s: float = Field(5.0, ge=0, le=300)
    jwks_min_refresh_interval_s: float = Field(10.0, ge=0)
    identity_cache_ttl_s: float = Field(30.0, ge=0)
    identity_cache_size: int = Field(10_000, ge=0)
    trusted_proxies: str = ""
    auth_failures_per_min: int = Field(
        30, ge=1, le=100_000, description="unknown API keys one client address may try per minute (then 429)"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_proxy_networks(self) -> list[IPNetwork]:
        return parse_networks(self.trusted_proxies)

    def insecure_defaults(self) -> list[str]:
        bad = super().insecure_defaults()
        if not self.auth_internal_token:
            bad.append("GATEWAY_AUTH_INTERNAL_TOKEN (unset)")
        return bad
