"""Findings 3, 11 (allow-list at login) and 13 (invalid API keys): only
``GATEWAY_TRUSTED_PROXIES`` decides which ``X-Forwarded-For`` is believed, the IP allow-list
holds at login too, and guessing API keys from one address is throttled."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest

from tests.security.conftest import SecuritySystem, User

pytestmark = pytest.mark.e2e

SPOOFED = {"X-Forwarded-For": "10.9.9.9", "Forwarded": "for=10.9.9.9", "X-Real-IP": "10.9.9.9"}


async def _restrict(sec: SecuritySystem, user: User, networks: list[str]) -> None:
    response = await sec.api.put(
        f"/api/users/{user.id}/ip-allowlist", headers=sec.admin.bearer, json={"ipAllowlist": networks}
    )
    assert response.status_code == 200, response.text


async def test_forwarded_headers_from_loopback_do_not_pass_the_allow_list(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """uvicorn believed ``X-Forwarded-For`` from 127.0.0.1 before the gateway's own logic: with
    an allow-list of 10.0.0.0/8 a request from 127.0.0.1 claiming 10.9.9.9 got through."""
    user = await new_user()
    await _restrict(sec, user, ["10.0.0.0/8"])
    for headers in (user.key, user.bearer):
        response = await sec.api.get("/api/instances", headers={**headers, **SPOOFED})
        assert response.status_code == 403, response.text
        assert "IP address" in response.json()["error"]
    # The same header is believed from a configured trusted proxy (gateway-b trusts loopback).
    trusted = await sec.api_b.get("/api/instances", headers={**user.key, "X-Forwarded-For": "10.9.9.9"})
    assert trusted.status_code == 200, trusted.text
    outside = await sec.api_b.get("/api/instances", headers={**user.key, "X-Forwarded-For": "192.0.2.7"})
    assert outside.status_code == 403


async def test_login_applies_the_allow_list(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """A restricted user logging in from outside the allow-list gets neither a token nor the
    plaintext API key, whatever forwarding headers it adds."""
    user = await new_user()
    await _restrict(sec, user, ["10.0.0.0/8"])
    credentials = {"email": user.email, "password": user.password}
    for api, headers in ((sec.api, SPOOFED), (sec.api_b, {"X-Forwarded-For": "192.0.2.7"})):
        response = await api.post("/api/auth/login", json=credentials, headers=headers)
        assert response.status_code == 403, response.text
        assert "token" not in response.text and user.api_key not in response.text
    allowed = await sec.api_b.post(
        "/api/auth/login", json=credentials, headers={"X-Forwarded-For": "10.1.2.3"}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["token"]


async def test_unknown_api_keys_are_throttled_per_address(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """Random keys used to be looked up in auth without limit (3,000 at 88/s). gateway-b allows 5
    unknown keys per address per minute; then 429 without asking auth, for that address only."""
    user = await new_user()
    attacker = {"X-Forwarded-For": "198.51.100.23"}
    statuses = []
    for _ in range(12):
        response = await sec.api_b.get(
            "/api/instances", headers={**attacker, "x-api-key": secrets.token_hex(24)}
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5, statuses
    assert set(statuses[5:]) == {429}, statuses
    assert int(response.headers["Retry-After"]) >= 1
    # Another address, and a valid key from it, are unaffected.
    other = await sec.api_b.get("/api/instances", headers={"X-Forwarded-For": "198.51.100.99", **user.key})
    assert other.status_code == 200
    other_bad = await sec.api_b.get(
        "/api/instances", headers={"X-Forwarded-For": "198.51.100.99", "x-api-key": "wrong"}
    )
    assert other_bad.status_code == 401
