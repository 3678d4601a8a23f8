"""Unit tests of auth's and the gateway auth layer's pure parts (no broker, no database)."""

from __future__ import annotations

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from wa_auth.crypto import ApiKeyVault, TokenSigner, hash_password, verify_password
from wa_auth.schemas import UserCreate, UserUpdate
from wa_auth.settings import AuthSettings, parse_duration_s
from wa_gateway.auth.client import Identity, IdentityCache
from wa_gateway.auth.layer import AuthLayer
from wa_gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("raw", "seconds"), [("24h", 86400), ("30m", 1800), ("90", 90), ("7d", 604800), ("1w", 604800), (60, 60)]
)
def test_durations(raw: str | int, seconds: int) -> None:
    assert parse_duration_s(raw) == seconds


@pytest.mark.parametrize("raw", ["", "1y", "-5", "0", "h"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(raw)


def test_production_refuses_shipped_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROFILE", "production")
    with pytest.raises(ValueError) as err:
        AuthSettings()
    for name in ("ADMIN_PASSWORD", "AUTH_JWT_PRIVATE_KEY", "AUTH_API_KEY_SECRET", "AUTH_INTERNAL_TOKEN"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="GATEWAY_AUTH_INTERNAL_TOKEN"):
        GatewaySettings()


def test_password_hash_is_argon2id_owasp() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password(None, "correct horse")


def test_api_key_vault() -> None:
    vault = ApiKeyVault(b"s" * 32)
    key = vault.generate()
    assert key.startswith("wak_") and len(key) == 47
    sealed = vault.seal(key, "user-1")
    assert key.encode() not in sealed
    assert vault.open(sealed, "user-1") == key
    with pytest.raises(InvalidTag):
        vault.open(sealed, "user-2")  # bound to its user
    assert vault.digest(key) == vault.digest(key) != ApiKeyVault(b"t" * 32).digest(key)


def test_token_and_jwks() -> None:
    signer = TokenSigner(Ed25519PrivateKey.generate(), issuer="iss", audience="aud", lifetime_s=60)
    from wa_common.schemas import utcnow

    token = signer.sign(user_id="u1", role="admin", now=utcnow())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == signer.kid
    (jwk,) = signer.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience="aud", issuer="iss")
    assert claims["sub"] == "u1" and claims["role"] == "admin" and claims["exp"] - claims["iat"] == 60


def test_mass_assignment_fields_are_known() -> None:
    with pytest.raises(ValueError, match="isAdmin"):
        UserUpdate.model_validate({"isAdmin": True})
    with pytest.raises(ValueError, match="ipAllowlist"):
        UserCreate.model_validate(
            {
                "email": "a@b.io",
                "password": "12345678",
                "firstName": "A",
                "lastName": "B",
                "ipAllowlist": ["x"],
            }
        )
    assert UserUpdate.model_validate({"ipAllowlist": ["10.1.2.3", "10.0.0.0/8"]}).ip_allowlist == [
        "10.1.2.3/32",
        "10.0.0.0/8",
    ]


def test_identity_allow_list() -> None:
    ident = Identity.from_wire({"userId": "u", "role": "user", "active": True, "ipAllowlist": ["10.0.0.0/8"]})
    assert ident.allows("10.2.3.4")
    assert not ident.allows("192.168.1.1")
    assert not ident.allows("::1")
    assert not ident.allows(None)
    assert Identity.from_wire({"userId": "u", "role": "user", "active": True}).allows("1.2.3.4")


def test_identity_cache_invalidation_and_epoch() -> None:
    cache = IdentityCache(ttl_s=30, max_entries=2)
    ident = Identity("u1", "user", True)
    epoch = cache.epoch
    cache.put(cache.key_slot("k1"), ident, epoch)
    cache.put(cache.user_slot("u1"), ident, epoch)
    assert cache.get(cache.key_slot("k1")) is ident
    assert cache.invalidate_user("u1") == 2
    assert cache.get(cache.key_slot("k1")) is None
    cache.put(cache.key_slot("k1"), ident, epoch)  # a lookup that began before the invalidation
    assert cache.get(cache.key_slot("k1")) is None
    for n in range(3):
        cache.put(cache.key_slot(f"k{n}"), ident, cache.epoch)
    assert cache.get(cache.key_slot("k0")) is None  # bounded: the oldest went


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (peer, 1234), "method": "GET", "path": "/"})


def test_client_ip_trusts_only_configured_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROFILE", "dev")
    plain = AuthLayer(GatewaySettings())
    assert plain.client_ip(_request("10.0.0.5", "1.2.3.4")) == "10.0.0.5"
    proxied = AuthLayer(GatewaySettings(trusted_proxies="10.0.0.0/8"))
    assert proxied.client_ip(_request("10.0.0.5", "9.9.9.9, 1.2.3.4, 10.0.0.7")) == "1.2.3.4"
    assert proxied.client_ip(_request("8.8.8.8", "1.2.3.4")) == "8.8.8.8"  # not from a proxy
    assert proxied.client_ip(_request("10.0.0.5", None)) == "10.0.0.5"


def test_retired_keys_stay_published() -> None:
    from cryptography.hazmat.primitives import serialization

    from wa_auth.crypto import load_public_keys
    from wa_common.schemas import utcnow

    old = TokenSigner(Ed25519PrivateKey.generate(), issuer="i", audience="a", lifetime_s=60)
    old_token = old.sign(user_id="u", role="user", now=utcnow())
    pem = (
        Ed25519PrivateKey.generate()  # noise: a second retired key
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    old_pem = old._key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    one_line = (old_pem.decode() + pem).replace("\n", "\\n")  # as written in an env file
    new = TokenSigner(
        Ed25519PrivateKey.generate(),
        issuer="i",
        audience="a",
        lifetime_s=60,
        previous=load_public_keys(one_line),
    )
    keys = {k["kid"]: k for k in new.jwks()["keys"]}
    assert len(keys) == 3 and new.jwks()["keys"][0]["kid"] == new.kid
    verify_with = jwt.PyJWK(keys[old.kid]).key
    assert jwt.decode(old_token, verify_with, algorithms=["EdDSA"], audience="a", issuer="i")["sub"] == "u"
