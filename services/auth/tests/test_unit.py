"""Unit tests of auth's and the gateway auth layer's pure parts (no broker, no database), and of
the password-check throttle on a SQLite store (the embedded profile's; PostgreSQL is covered by
``test_security.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
from wa_gateway.ratelimit import RateLimiter
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
                "password": "a fine passphrase",
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
    plain = AuthLayer(GatewaySettings(), RateLimiter(0, 1))
    assert plain.client_ip(_request("10.0.0.5", "1.2.3.4")) == "10.0.0.5"
    proxied = AuthLayer(GatewaySettings(trusted_proxies="10.0.0.0/8"), RateLimiter(0, 1))
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


# ----------------------------------------------------------------- password policy


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short7!", "at least 8"),
        ("e\u0301" * 4 + "x", "at least 8"),  # 9 code points, 5 after NFKC (é is one)
        ("Zq9" * 43, "at most 128"),  # 129
        (" " * 8, "whitespace"),
        ("\u3000" * 4 + " " * 4, "whitespace"),
        ("\x00" * 8, "control"),
        ("tab\there-it-is", "control"),
        ("line\nbreak-pass", "control"),
        ("a" * 12, "repeated"),
        ("password1", "too common"),
        ("PassWord1", "too common"),
        ("qwertyuiop", "too common"),
        ("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "too common"),  # fullwidth "password"
        ("\ud800" * 8, "Unicode"),
    ],
)
def test_password_policy_refuses(password: str, reason: str) -> None:
    from wa_auth.policy import password_problem

    problem = password_problem(password)
    assert problem is not None and reason in problem
    assert password not in problem


def test_password_policy_accepts_and_uses_context() -> None:
    from wa_auth.policy import password_problem

    for ok in (
        "correct horse battery",
        "Zq9" * 42 + "xy",
        "pässwörd-ünïcode",
        "  spaced  out  ",
        "🙂🙃🙂🙃🙂🙃🙂🙃",
    ):
        assert password_problem(ok) is None, ok
    assert "email" in (password_problem("Jane.Doe-1984@Example.com", email="jane.doe-1984@example.com") or "")
    assert "email" in (password_problem("jane.doe-1984", email="Jane.Doe-1984@example.com") or "")
    assert password_problem("jane.doe-1984", email="someone@example.com") is None


def test_new_passwords_are_checked_by_the_request_models() -> None:
    from wa_auth.schemas import PasswordChange

    with pytest.raises(ValueError, match="newPassword") as err:
        PasswordChange.model_validate({"currentPassword": "whatever it was", "newPassword": " " * 8})
    assert "whitespace" in str(err.value)
    with pytest.raises(ValueError, match="password") as err:
        UserCreate.model_validate(
            {"email": "ann@example.com", "password": "ann@example.com", "firstName": "A", "lastName": "B"}
        )
    assert "email" in str(err.value) and "ann@example.com'" not in str(err.value)


def test_settings_errors_do_not_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROFILE", "embedded")
    monkeypatch.setenv("AUTH_API_KEY_SECRET", "too-short-secret-value")
    with pytest.raises(ValueError, match="AUTH_API_KEY_SECRET must be at least 32") as err:
        AuthSettings()
    assert "too-short-secret-value" not in str(err.value)


# ------------------------------------------------------------------ client address


def test_client_address_and_allow_list() -> None:
    from wa_auth.service import address_allowed
    from wa_auth.throttle import ClientAddress, normalise_address

    assert normalise_address(" 203.0.113.9 ") == "203.0.113.9"
    assert normalise_address("::ffff:203.0.113.9") == "203.0.113.9"
    assert normalise_address("2001:DB8:0::1") == "2001:db8::1"
    assert normalise_address("not-an-ip") is None and normalise_address("") is None
    assert ClientAddress("203.0.113.9", "127.0.0.1").throttle_subject == "203.0.113.9"
    assert ClientAddress(None, "127.0.0.1").throttle_subject == "127.0.0.1"
    assert ClientAddress("2001:db8::1:2:3:4").throttle_subject == "2001:db8::/64"
    assert ClientAddress().throttle_subject is None
    assert address_allowed([], None) and address_allowed(None, "1.2.3.4")
    assert address_allowed(["203.0.113.0/24"], "203.0.113.9")
    assert not address_allowed(["203.0.113.0/24"], "198.51.100.7")
    assert not address_allowed(["203.0.113.0/24"], None)
    assert not address_allowed(["::/0"], "203.0.113.9")


# ------------------------------------------------- the throttle on a SQLite store


async def test_throttle_on_sqlite_admits_exactly_the_limit_under_concurrency(tmp_path: Path) -> None:
    """40 concurrent checks of one account on the embedded profile's SQLite store: exactly 10
    are admitted (SQLite serialises the writers), the others get 429."""
    from wa_auth.errors import AuthError
    from wa_auth.models import Base
    from wa_auth.throttle import Attempt, ClientAddress, Throttle
    from wa_common.db import create_engine, session_factory

    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        throttle = Throttle(session_factory(engine), window_s=60, max_per_account=10, max_per_address=50)
        client = ClientAddress("203.0.113.5")

        async def one() -> Attempt | AuthError:
            try:
                return await throttle.begin(("user", "U1"), client)
            except AuthError as exc:
                return exc

        outcomes = await asyncio.gather(*(one() for _ in range(40)))
        refused = [o for o in outcomes if isinstance(o, AuthError)]
        assert len(outcomes) - len(refused) == 10
        assert all(e.status == 429 and e.retry_after_s and 1 <= e.retry_after_s <= 60 for e in refused)
        # A right password forgets the account's failures (not the address's).
        admitted = [o for o in outcomes if not isinstance(o, AuthError)]
        await throttle.passed(admitted[0])
        await throttle.begin(("user", "U1"), client)
    finally:
        await engine.dispose()


async def test_throttle_forgets_failures_of_keys_never_tried_again(tmp_path: Path) -> None:
    """A spray of random emails and addresses leaves one row per key; pruning removes every row
    outside the window (the per-key prune only ran when the same key came back)."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from wa_auth.models import Base, LoginFailure
    from wa_auth.repository import add_failure
    from wa_auth.throttle import ClientAddress, Throttle
    from wa_common.db import create_engine, session_factory
    from wa_common.schemas import utcnow

    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = session_factory(engine)
        throttle = Throttle(sessions, window_s=60, max_per_account=10, max_per_address=50)
        old = utcnow() - timedelta(seconds=120)
        async with sessions() as session:
            for i in range(200):
                await add_failure(session, "email", f"spray-{i}@example.com", old)
                await add_failure(session, "ip", f"198.51.100.{i}", old)
            await session.commit()
        await throttle.begin(("email", "recent@example.com"), ClientAddress("203.0.113.9"))
        assert await throttle.prune() == 400
        async with sessions() as session:
            left = (await session.execute(select(func.count()).select_from(LoginFailure))).scalar_one()
        assert left == 2, "the recent attempt (account and address) stays"
    finally:
        await engine.dispose()


async def test_seeded_admin_password_is_exempt_only_in_the_embedded_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wa_auth.models import Base
    from wa_auth.repository import count_users
    from wa_auth.service import AuthService
    from wa_common.db import create_engine, session_factory

    monkeypatch.setenv("ADMIN_PASSWORD", "password1")  # on the common-password list
    signer = TokenSigner(Ed25519PrivateKey.generate(), issuer="i", audience="a", lifetime_s=60)
    for profile in ("dev", "embedded"):
        monkeypatch.setenv("WA_PROFILE", profile)
        engine = create_engine(f"sqlite:///{tmp_path / profile}.db")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            vault = ApiKeyVault(b"s" * 32)
            service = AuthService(AuthSettings(), session_factory(engine), None, signer, vault)
            if profile == "dev":
                with pytest.raises(RuntimeError, match="ADMIN_PASSWORD is too common") as err:
                    await service.seed_admin()
                assert "password1" not in str(err.value)
            else:
                await service.seed_admin()  # tolerated, with a warning at every start
                async with service.sessions() as session:
                    assert await count_users(session) == 1
        finally:
            await engine.dispose()
