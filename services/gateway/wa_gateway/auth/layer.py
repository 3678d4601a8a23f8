"""The authentication layer of one gateway process: tokens, API keys, allow-lists, client address.

Tokens are verified locally: the ``alg`` header must be ``EdDSA`` (anything else, ``none``
included, is refused before any key is looked at), the ``kid`` must name a key of auth's JWKS,
and ``iss``, ``aud``, ``exp``, ``iat`` and ``sub`` must be present and right. The user behind a
token or an API key is then looked up in auth (cached) for its current role, active flag and IP
allow-list, so a role change, a deactivation or a deletion takes effect at once (the events drop
the cache) rather than at token expiry.

Admission, after authentication, on every authenticated route (the identity routes included):
the caller's request rate (``GATEWAY_RATE_LIMIT_PER_S``/``_BURST``, 429). Failed API-key lookups
are throttled per client address (``GATEWAY_AUTH_FAILURES_PER_MIN``, 429 with ``Retry-After``)
before auth is asked again, so guessing keys cannot make auth work for free. The client address
is the TCP peer unless it is one of ``GATEWAY_TRUSTED_PROXIES`` (uvicorn's own forwarded-header
handling is off in every service: ``wa_common.runtime.serve``).
"""

from __future__ import annotations

import ipaddress

import jwt
from fastapi import HTTPException, Request
from prometheus_client import Counter

from wa_common.logs import get_logger
from wa_common.schemas import Caller
from wa_gateway.auth.client import AuthClient, AuthUnavailable, Identity, IdentityCache, KeyStore
from wa_gateway.auth.settings import AuthClientSettings
from wa_gateway.errors import ApiError
from wa_gateway.ratelimit import RateLimiter

log = get_logger(__name__)

JWT_ALGORITHM = "EdDSA"

AUTH_OUTCOMES = Counter(
    "wa_gateway_auth_total",
    "Authentication attempts at the gateway, by method (token, api_key, none) and outcome.",
    ["method", "outcome"],
)


def _unauthorized(method: str, outcome: str, message: str) -> HTTPException:
    AUTH_OUTCOMES.labels(method, outcome).inc()
    return HTTPException(401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def _unavailable(exc: AuthUnavailable) -> HTTPException:
    log.warning("auth service unavailable", error=str(exc))
    return HTTPException(503, detail="the authentication service is unavailable; retry shortly")


class AuthLayer:
    """Everything :func:`get_caller` needs; created by ``setup_auth`` and kept on ``app.state``."""

    def __init__(self, settings: AuthClientSettings, rate: RateLimiter):
        self.settings = settings
        self.client = AuthClient(settings)
        self.keys = KeyStore(self.client, settings.jwks_min_refresh_interval_s)
        self.cache = IdentityCache(settings.identity_cache_ttl_s, settings.identity_cache_size)
        self.trusted_proxies = settings.trusted_proxy_networks
        self.rate = rate
        per_min = settings.auth_failures_per_min
        self.key_failures = RateLimiter(per_min / 60.0, max(1, per_min))

    # ------------------------------------------------------------------ admission

    def admit(self, caller: Caller) -> None:
        """Take one request of ``caller``'s rate; 429 :class:`ApiError` with ``Retry-After`` when
        the bucket is empty."""
        wait = self.rate.acquire(caller.user_id)
        if wait > 0:
            raise ApiError(
                429,
                f"Rate limit exceeded: at most {self.rate.rate:g} requests per second "
                f"(burst {self.rate.burst}) per API key",
                headers={"Retry-After": self.rate.retry_after(wait)},
            )

    # ----------------------------------------------------------- client address

    def client_ip(self, request: Request) -> str | None:
        """The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
        untrusted address of ``X-Forwarded-For`` (read right to left)."""
        peer = request.client.host if request.client else None
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        hops = [
            h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()
        ]
        address = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            address = hop
            if not self._trusted(hop):
                break
        return address

    def _trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self.trusted_proxies)

    # ---------------------------------------------------------------- lookups

    async def _identity_of_user(self, user_id: str) -> Identity | None:
        slot = self.cache.user_slot(user_id)
        cached = self.cache.get(slot)
        if cached is not None:
            return cached
        epoch = self.cache.epoch
        response = await self.client.request("GET", f"/internal/identities/{user_id}")
        if response.status_code != 200:
            return None
        identity = Identity.from_wire(response.json())
        self.cache.put(slot, identity, epoch)
        return identity

    async def _identity_of_key(self, api_key: str) -> Identity | None:
        slot = self.cache.key_slot(api_key)
        cached = self.cache.get(slot)
        if cached is not None:
            return cached
        epoch = self.cache.epoch
        response = await self.client.request("POST", "/internal/api-keys/resolve", json={"apiKey": api_key})
        if response.status_code != 200:
            return None
        identity = Identity.from_wire(response.json())
        self.cache.put(slot, identity, epoch)
        return identity

    async def identity_from_token(self, token: str) -> Identity:
        """The user of a valid token; ``HTTPException`` 401 (invalid) or 503 (auth down)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _unauthorized("token", "malformed", "invalid token") from exc
        if header.get("alg") != JWT_ALGORITHM:
            raise _unauthorized("token", "bad_alg", "invalid token: signature algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("token", "no_kid", "invalid token: no key id")
        try:
            key = await self.keys.get(kid)
        except AuthUnavailable as exc:
            raise _unavailable(exc) from exc
        if key is None:
            raise _unauthorized("token", "unknown_kid", "invalid token: unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("token", "expired", "token expired; log in again") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise _unauthorized("token", "wrong_audience", "invalid token: not issued for this API") from exc
        except jwt.InvalidTokenError as exc:
            raise _unauthorized("token", "invalid", "invalid token") from exc
        try:
            identity = await self._identity_of_user(str(claims["sub"]))
        except AuthUnavailable as exc:
            raise _unavailable(exc) from exc
        if identity is None:
            raise _unauthorized("token", "unknown_user", "invalid token: the user no longer exists")
        valid_after = identity.tokens_valid_after
        if valid_after is not None and int(claims["iat"]) < valid_after:
            raise _unauthorized("token", "revoked", "token revoked (the password was changed); log in again")
        return identity

    async def identity_from_api_key(self, api_key: str, client_ip: str | None) -> Identity:
        """The user of an API key; ``HTTPException`` 401 (unknown key), 429 (too many unknown
        keys from ``client_ip`` lately) or 503 (auth down)."""
        address = client_ip or "unknown"
        cached = self.cache.get(self.cache.key_slot(api_key)) if api_key else None
        if cached is not None:
            return cached
        wait = self.key_failures.peek(address)
        if wait > 0:
            AUTH_OUTCOMES.labels("api_key", "throttled").inc()
            raise ApiError(
                429,
                "Too many invalid API keys from this address; try again later",
                headers={"Retry-After": self.key_failures.retry_after(wait)},
            )
        if not api_key or len(api_key) > 256 or not api_key.isascii() or not api_key.isprintable():
            identity = None
        else:
            try:
                identity = await self._identity_of_key(api_key)
            except AuthUnavailable as exc:
                raise _unavailable(exc) from exc
        if identity is None:
            self.key_failures.acquire(address)
            raise _unauthorized("api_key", "invalid", "invalid API key")
        return identity

    async def authenticate(self, request: Request) -> Caller:
        """The caller of ``request`` from ``Authorization: Bearer`` or ``x-api-key``.

        401: no credentials, bad token or key, disabled user. 403: the client address is outside
        the user's IP allow-list. 429: too many invalid API keys from this address. 503: auth
        could not be asked.
        """
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        api_key = request.headers.get("x-api-key")
        if scheme.lower() == "bearer" and token.strip():
            method, identity = "token", await self.identity_from_token(token.strip())
        elif api_key:
            method = "api_key"
            identity = await self.identity_from_api_key(api_key.strip(), self.client_ip(request))
        else:
            raise _unauthorized(
                "none", "missing", "authentication required: send Authorization: Bearer <token> or x-api-key"
            )
        if not identity.active:
            raise _unauthorized(method, "disabled", "this account is disabled")
        if not identity.allows(self.client_ip(request)):
            AUTH_OUTCOMES.labels(method, "ip_denied").inc()
            raise HTTPException(403, detail="requests from this IP address are not allowed for this account")
        AUTH_OUTCOMES.labels(method, "ok").inc()
        return Caller(user_id=identity.user_id, role="admin" if identity.role == "admin" else "user")
