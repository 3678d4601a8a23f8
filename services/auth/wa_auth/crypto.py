"""Secrets of the auth service: password hashing, API-key sealing, JWT signing.

- Passwords: argon2id (argon2-cffi) with the OWASP Password Storage Cheat Sheet parameters
  (m=19 MiB, t=2, p=1). The ``*_async`` variants run in a worker thread, so a hash (tens of
  milliseconds of CPU) does not stall the event loop.
- API keys: ``wak_`` + 43 URL-safe characters (256 random bits). Stored sealed with AES-256-GCM
  (the user id as associated data) and found by HMAC-SHA256; both keys are derived with HKDF from
  ``AUTH_API_KEY_SECRET``.
- JWT: EdDSA (Ed25519) signatures by pyjwt; ``kid`` is the RFC 7638 thumbprint of the public key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import OKPAlgorithm

from wa_auth.settings import AuthSettings
from wa_common.logs import get_logger

log = get_logger(__name__)

API_KEY_PREFIX = "wak_"
JWT_ALGORITHM = "EdDSA"

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """argon2id PHC string of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches ``password_hash`` (``None``: compare with a dummy, False)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError, UnicodeEncodeError):
        return False


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """:func:`verify_password` in a worker thread."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def password_needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)


def _write_secret_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def _generated(settings: AuthSettings, name: str, make: Any) -> bytes:
    """Content of ``<data_dir>/<name>``, created with ``make()`` the first time (relaxed only)."""
    if not settings.relaxed:
        raise RuntimeError(f"no {name} configured and WA_PROFILE={settings.profile.value} generates none")
    path = Path(settings.data_dir) / name
    if not path.exists():
        try:
            _write_secret_file(path, make())
            log.warning("generated a secret for the embedded profile", file=str(path))
        except FileExistsError:
            pass
    return path.read_bytes()


class ApiKeyVault:
    """Generates, seals, opens and digests API keys with keys derived from one secret."""

    def __init__(self, secret: bytes):
        def derive(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

        self._aead = AESGCM(derive(b"wa-auth api-key encryption v1"))
        self._mac_key = derive(b"wa-auth api-key lookup v1")

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> ApiKeyVault:
        if settings.api_key_secret:
            return cls(settings.api_key_secret.encode())
        return cls(_generated(settings, "auth-api-key.secret", lambda: secrets.token_bytes(32)))

    @staticmethod
    def generate() -> str:
        """A new API key: ``wak_`` + 43 URL-safe characters."""
        return API_KEY_PREFIX + secrets.token_urlsafe(32)

    def digest(self, api_key: str) -> str:
        """Hex HMAC-SHA256 of ``api_key`` (64 characters): the lookup column."""
        return hmac.new(self._mac_key, api_key.encode(), hashlib.sha256).hexdigest()

    def seal(self, api_key: str, user_id: str) -> bytes:
        """nonce (12 bytes) || AES-GCM ciphertext+tag, bound to ``user_id``."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, api_key.encode(), user_id.encode())

    def open(self, sealed: bytes, user_id: str) -> str:
        """The API key sealed by :meth:`seal`; raises ``cryptography.exceptions.InvalidTag``."""
        return self._aead.decrypt(sealed[:12], sealed[12:], user_id.encode()).decode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: Ed25519PublicKey) -> dict[str, Any]:
    """The JWK of ``key`` with ``kid`` = RFC 7638 thumbprint, ``alg`` = EdDSA, ``use`` = sig."""
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key, as_dict=True)
    thumb_input = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(thumb_input.encode()).digest())
    return {**jwk, "kid": kid, "alg": JWT_ALGORITHM, "use": "sig"}


_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def load_public_keys(pems: str) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from concatenated PEM blocks; ``ValueError`` for any other key type."""
    keys: list[Ed25519PublicKey] = []
    for block in _PEM_BLOCK.findall(pems.replace("\\n", "\n")):
        key = serialization.load_pem_public_key(block.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("AUTH_JWT_PREVIOUS_PUBLIC_KEYS must hold Ed25519 public keys (PEM)")
        keys.append(key)
    return keys


class TokenSigner:
    """Signs access tokens with an Ed25519 key and publishes its public half as a JWKS."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        lifetime_s: int,
        previous: list[Ed25519PublicKey] | None = None,
    ):
        self._key = private_key
        self.issuer = issuer
        self.audience = audience
        self.lifetime_s = lifetime_s
        current = public_jwk(private_key.public_key())
        self.kid = current["kid"]
        self._jwks = [current] + [public_jwk(k) for k in previous or [] if public_jwk(k)["kid"] != self.kid]

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenSigner:
        if settings.jwt_private_key:
            pem = settings.jwt_private_key.encode()
        elif settings.jwt_private_key_file:
            pem = Path(settings.jwt_private_key_file).read_bytes()
        else:
            pem = _generated(
                settings,
                "auth-jwt-ed25519.pem",
                lambda: Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the JWT private key must be an Ed25519 key (PEM, PKCS#8)")
        return cls(
            key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            lifetime_s=settings.jwt_expiration_s,
            previous=load_public_keys(settings.jwt_previous_public_keys),
        )

    def sign(self, *, user_id: str, role: str, now: datetime) -> str:
        """A JWT with ``iss, aud, sub, role, iat, exp`` (``exp`` = now + lifetime) and ``kid``."""
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "role": role,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.lifetime_s)).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM, headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [<public JWK with kid, alg, use>, ...]}``: the current key first, then the
        retired ones from ``AUTH_JWT_PREVIOUS_PUBLIC_KEYS``."""
        return {"keys": [dict(k) for k in self._jwks]}
