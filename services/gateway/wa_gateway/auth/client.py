"""The gateway's view of auth: internal HTTP client, JWKS key store, identity cache.

- :class:`AuthClient` calls auth's internal API with httpx, sending ``x-internal-token``.
- :class:`KeyStore` holds auth's public keys (JWKS) by ``kid``; an unknown ``kid`` triggers a
  refresh at most once per ``GATEWAY_JWKS_MIN_REFRESH_INTERVAL_S`` (calls in the meantime wait
  for the same refresh instead of starting their own).
- :class:`IdentityCache` keeps what auth said about an API key or a user for
  ``GATEWAY_IDENTITY_CACHE_TTL_S`` seconds; :meth:`IdentityCache.invalidate_user` drops a user's
  entries when auth announces ``api_key.rotated``/``user.updated``/``user.deleted``. Keys are held
  by their SHA-256 digest, never in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from wa_common.logs import get_logger
from wa_common.schemas import Caller
from wa_gateway.auth.settings import AuthClientSettings, IPNetwork

log = get_logger(__name__)

INTERNAL_TOKEN_HEADER = "x-internal-token"  # noqa: S105 (a header name)
CALLER_HEADER = "x-wa-caller"
CLIENT_IP_HEADER = "x-wa-client-ip"
TOKEN_REJECTED_HEADER = "x-internal-token-rejected"  # noqa: S105 (a header name)


class AuthUnavailable(Exception):
    """Auth could not be asked (connection refused, timeout) or refused to serve (5xx, internal
    token rejected). ``answered`` tells the two apart: ``False`` when nothing answered (auth
    not up yet, or unreachable), ``True`` when auth answered with a failure."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass(frozen=True)
class Identity:
    """A user as the gateway admits it: role, active flag, allowed networks (empty: any)."""

    user_id: str
    role: str
    active: bool
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)
    # Unix seconds: tokens issued (``iat``) before it are refused (a password change).
    tokens_valid_after: int | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Identity:
        """From auth's ``{userId, role, active, ipAllowlist, tokensValidAfter}``."""
        return cls(
            user_id=str(data["userId"]),
            role="admin" if data.get("role") == "admin" else "user",
            active=bool(data.get("active", False)),
            networks=tuple(ipaddress.ip_network(c, strict=False) for c in data.get("ipAllowlist") or []),
            tokens_valid_after=(
                int(data["tokensValidAfter"]) if data.get("tokensValidAfter") is not None else None
            ),
        )

    def allows(self, address: str | None) -> bool:
        """True if the allow-list is empty or ``address`` is inside one of its networks."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)


class AuthClient:
    """Calls auth's internal routes. Raises :class:`AuthUnavailable` when auth cannot answer."""

    def __init__(self, settings: AuthClientSettings, transport: httpx.AsyncBaseTransport | None = None):
        headers = (
            {INTERNAL_TOKEN_HEADER: settings.auth_internal_token} if settings.auth_internal_token else {}
        )
        self.http = httpx.AsyncClient(
            base_url=settings.auth_url.rstrip("/"),
            timeout=settings.auth_timeout_s,
            headers=headers,
            transport=transport,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        caller: Caller | None = None,
        client_ip: str | None = None,
        json: Any = None,
        params: Any = None,
    ) -> httpx.Response:
        """One internal call; the response is returned whatever its status below 500."""
        headers: dict[str, str] = {}
        if caller is not None:
            headers[CALLER_HEADER] = caller.model_dump_json()
        if client_ip:
            headers[CLIENT_IP_HEADER] = client_ip
        try:
            response = await self.http.request(method, path, headers=headers, json=json, params=params)
        except httpx.HTTPError as exc:
            raise AuthUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise AuthUnavailable(f"auth answered {response.status_code}", answered=True)
        if response.headers.get(TOKEN_REJECTED_HEADER):
            raise AuthUnavailable(
                "auth refused our internal token: check GATEWAY_AUTH_INTERNAL_TOKEN", answered=True
            )
        return response


# With no signing keys loaded, how often a request may ask auth for them (seconds).
NO_KEYS_RETRY_S = 0.25


class KeyStore:
    """Auth's public signing keys by ``kid``, refreshed on demand (rate-limited)."""

    def __init__(self, client: AuthClient, min_refresh_interval_s: float):
        self._client = client
        self._min_interval = min_refresh_interval_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_attempt = float("-inf")
        self._last_failed = False
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Replace the keys with auth's current JWKS; raises :class:`AuthUnavailable`."""
        self._last_attempt = time.monotonic()
        self._last_failed = True
        response = await self._client.request("GET", "/internal/jwks")
        if response.status_code != 200:
            raise AuthUnavailable(f"JWKS request answered {response.status_code}", answered=True)
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in response.json().get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="EdDSA")
        self._keys = keys
        self._last_failed = False
        log.info("signing keys loaded", kids=sorted(keys))

    @property
    def loaded(self) -> bool:
        """True once auth's keys have been fetched."""
        return bool(self._keys)

    async def ensure_loaded(self) -> None:
        """Fetch the keys unless they are there (one fetch at a time, shared with :meth:`get`);
        raises :class:`AuthUnavailable`."""
        async with self._lock:
            if not self._keys:
                await self.refresh()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid``, or ``None`` when auth's current JWKS does not have it.

        An unknown ``kid`` refreshes the keys at most once per ``min_refresh_interval_s`` (a
        flood of forged kids cannot hammer auth). With no keys at all (auth was not reachable
        yet), it refreshes on demand, at most every ``NO_KEYS_RETRY_S``, and raises
        :class:`AuthUnavailable` (503) rather than calling a valid token unknown.
        """
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is not None:
                return key
            since = time.monotonic() - self._last_attempt
            if not self._keys:
                if self._last_failed and since < NO_KEYS_RETRY_S:
                    raise AuthUnavailable("auth's signing keys are not loaded yet")
                await self.refresh()
            elif since >= self._min_interval:
                await self.refresh()
            return self._keys.get(kid)


class IdentityCache:
    """A bounded TTL cache of identities by API-key digest and by user id."""

    def __init__(self, ttl_s: float, max_entries: int):
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        # Bumped by every invalidation: a lookup that started before one must not store its answer.
        self.epoch = 0

    @staticmethod
    def key_slot(api_key: str) -> str:
        return "k:" + hashlib.sha256(api_key.encode()).hexdigest()

    @staticmethod
    def user_slot(user_id: str) -> str:
        return "u:" + user_id

    def get(self, slot: str) -> Identity | None:
        entry = self._entries.get(slot)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(slot, None)
            return None
        return entry[1]

    def put(self, slot: str, identity: Identity, epoch: int) -> None:
        if self._ttl <= 0 or self._max <= 0 or epoch != self.epoch:
            return
        self._entries[slot] = (time.monotonic() + self._ttl, identity)
        self._entries.move_to_end(slot)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate_user(self, user_id: str) -> int:
        """Drop every entry of ``user_id``; returns how many were dropped."""
        self.epoch += 1
        stale = [s for s, (_, ident) in self._entries.items() if ident.user_id == user_id]
        for slot in stale:
            del self._entries[slot]
        return len(stale)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
