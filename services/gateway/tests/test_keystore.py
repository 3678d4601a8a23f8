"""``KeyStore``: when the gateway asks auth for its signing keys (JWKS).

The client is a stand-in for auth's HTTP API (what is tested is the gateway's decision to ask,
not HTTP); time is a controllable clock."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wa_gateway.auth import client as client_module
from wa_gateway.auth.client import NO_KEYS_RETRY_S, AuthUnavailable, KeyStore


def jwk(kid: str) -> dict[str, Any]:
    public = Ed25519PrivateKey.generate().public_key()
    return {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public)), "kid": kid}


class Auth:
    """Answers ``GET /internal/jwks`` with ``keys``, or is down (``AuthUnavailable``)."""

    def __init__(self) -> None:
        self.up = False
        self.keys: list[dict[str, Any]] = []
        self.calls = 0

    async def request(self, method: str, path: str, **_: Any) -> httpx.Response:
        assert (method, path) == ("GET", "/internal/jwks")
        self.calls += 1
        if not self.up:
            raise AuthUnavailable("connection refused")
        return httpx.Response(200, json={"keys": self.keys})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(client_module.time, "monotonic", lambda: now[0])
    return now


async def test_a_token_issued_just_after_auth_came_up_is_verified(clock: list[float]) -> None:
    """The gateway started before auth (its JWKS fetch failed); auth comes up and issues a token
    within the same second: the key is fetched for it, not refused as unknown (a CI failure)."""
    auth = Auth()
    keys = KeyStore(auth, min_refresh_interval_s=10)  # type: ignore[arg-type]
    with pytest.raises(AuthUnavailable):
        await keys.refresh()  # at start
    clock[0] += 0.3
    auth.up, auth.keys = True, [jwk("k1")]
    assert await keys.get("k1") is not None
    assert auth.calls == 2


async def test_without_keys_auth_down_is_a_503_and_not_hammered(clock: list[float]) -> None:
    auth = Auth()
    keys = KeyStore(auth, min_refresh_interval_s=10)  # type: ignore[arg-type]
    with pytest.raises(AuthUnavailable):
        await keys.get("k1")
    for _ in range(5):  # a burst of requests while auth is down: one call only
        with pytest.raises(AuthUnavailable):
            await keys.get("k1")
    assert auth.calls == 1
    clock[0] += NO_KEYS_RETRY_S
    with pytest.raises(AuthUnavailable):
        await keys.get("k1")
    assert auth.calls == 2


async def test_unknown_kids_refresh_at_most_once_per_interval(clock: list[float]) -> None:
    auth = Auth()
    auth.up, auth.keys = True, [jwk("k1")]
    keys = KeyStore(auth, min_refresh_interval_s=10)  # type: ignore[arg-type]
    await keys.refresh()
    assert await keys.get("k1") is not None and auth.calls == 1
    assert await keys.get("forged") is None  # too soon after the load: no call
    clock[0] += 10
    auth.keys.append(jwk("k2"))  # a rotation on auth's side
    assert await keys.get("k2") is not None and auth.calls == 2
    assert await keys.get("forged-again") is None and auth.calls == 2
