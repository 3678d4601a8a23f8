"""Security properties of the auth service, against its real process and a fresh PostgreSQL store.

One auth process (no gateway: the tests call ``/internal/*`` as the gateway does, with
``x-internal-token``, ``x-wa-caller`` and ``x-wa-client-ip``) on a database of this module's own.
Client addresses are header values from the documentation ranges (198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32): no traffic goes anywhere but to the auth process.

- password guessing through the password-change routes is throttled like login, with shared
  counters (``POST /internal/password``, ``PATCH /internal/users/{self}``);
- parallel guesses cannot overshoot the per-account limit (login and password change);
- login applies the user's IP allow-list (403, no token, no key);
- every new password follows the policy (length, controls, whitespace, common passwords);
- malformed input (NUL, lone surrogates, over-long strings, huge integers) is 400 on every route;
- a failing store write logs no secret, and the whole log holds none of the test's secrets.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import fresh_database
from services.auth.tests.processes import ROOT, Proc, start_process, stop_process, wait_ready
from tests.harness import free_port
from wa_common.ids import new_id

pytestmark = pytest.mark.integration

INTERNAL_TOKEN = "security-test-internal-token-0123456789"
ADMIN = {"email": "sec-admin@example.com", "password": "sec-admin-passphrase"}
PER_ACCOUNT = 10  # AUTH_LOGIN_MAX_FAILURES_PER_EMAIL (default)
PER_ADDRESS = 50  # AUTH_LOGIN_MAX_FAILURES_PER_IP (default)
NOT_ALLOWED = "logins from this IP address are not allowed for this account"
NUL, SURROGATE = "\x00", "\ud800"


@dataclass
class Auth:
    proc: Proc
    database_url: str
    admin_id: str
    # Every password and API key the tests used or received: none may appear in the log.
    secrets: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def auth(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Auth]:
    async with fresh_database("wa_test_authsec") as database_url:
        async for running in _auth(amqp_url, tmp_path_factory.mktemp("auth-security"), database_url):
            yield running


async def _auth(amqp_url: str, tmp: Path, database_url: str) -> AsyncIterator[Auth]:
    port = free_port()
    env = {
        **os.environ,
        "WA_PROFILE": "embedded",
        "AMQP_URL": amqp_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
        "AUTH_PORT": str(port),
        "AUTH_DATABASE_URL": database_url,
        "AUTH_DATA_DIR": str(tmp / "data"),
        "AUTH_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    subprocess.run(
        [sys.executable, "-m", "wa_auth", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    procs: list[Proc] = []

    def launch() -> Proc:
        procs.append(start_process("auth", "wa_auth", env, port, tmp))
        return procs[-1]

    try:
        proc = await wait_ready(launch(), "/readyz", launch)
        async with internal(proc) as api:
            login = await api.post("/internal/login", json=ADMIN, headers=from_ip("203.0.113.250"))
            assert login.status_code == 200, login.text
        yield Auth(proc, database_url, login.json()["user"]["id"], [ADMIN["password"]])
    finally:
        for started in procs:
            stop_process(started)


def internal(proc: Proc) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proc.url, headers={"x-internal-token": INTERNAL_TOKEN}, timeout=60)


@pytest.fixture
async def api(auth: Auth) -> AsyncIterator[httpx.AsyncClient]:
    async with internal(auth.proc) as client:
        yield client


def caller(user_id: str, role: str = "user") -> dict[str, str]:
    return {"x-wa-caller": json.dumps({"user_id": user_id, "role": role})}


def from_ip(address: str) -> dict[str, str]:
    return {"x-wa-client-ip": address}


_n = iter(range(1, 1_000_000))


def new_ipv4() -> str:
    """A fresh address of 198.51.100.0/24 (a header value only)."""
    n = next(_n)
    assert n < 250, "198.51.100.0/24 used up: use new_ipv6()"
    return f"198.51.100.{n}"


def new_ipv6() -> str:
    """An address in a fresh /64 of 2001:db8::/32 (a header value only)."""
    return f"2001:db8:{next(_n):x}::1"


async def create_user(api: httpx.AsyncClient, auth: Auth, **extra: Any) -> dict[str, Any]:
    body = {
        "email": f"sec-{new_id().lower()}@example.com",
        "password": f"pass-{new_id().lower()}",
        "firstName": "Sec",
        "lastName": "Tester",
        **extra,
    }
    response = await api.post("/internal/users", json=body, headers=caller(auth.admin_id, "admin"))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    created["password"] = body["password"]
    auth.secrets += [body["password"], created["apiKey"]]
    return created


async def login(api: httpx.AsyncClient, email: str, password: str, address: str | None) -> httpx.Response:
    headers = from_ip(address) if address else {}
    return await api.post("/internal/login", json={"email": email, "password": password}, headers=headers)


# ------------------------------------------------------------------- finding 1


async def change_password(
    api: httpx.AsyncClient, route: str, user: dict[str, Any], current: str, address: str
) -> httpx.Response:
    """A password change of ``user`` by themself, by ``route`` (``password`` or ``patch``)."""
    headers = {**caller(user["id"]), **from_ip(address)}
    if route == "password":
        body = {"currentPassword": current, "newPassword": "a brand new passphrase"}
        return await api.post("/internal/password", json=body, headers=headers)
    body = {"currentPassword": current, "password": "a brand new passphrase"}
    return await api.patch(f"/internal/users/{user['id']}", json=body, headers=headers)


async def test_password_change_guessing_is_throttled_like_login(api: httpx.AsyncClient, auth: Auth) -> None:
    for route in ("password", "patch"):
        user = await create_user(api, auth)
        address = new_ipv4()
        for n in range(PER_ACCOUNT):
            wrong = await change_password(api, route, user, f"wrong-guess-{n}", address)
            assert wrong.status_code == 400 and "currentPassword" in wrong.json()["error"], (
                route,
                wrong.text,
            )
        throttled = await change_password(api, route, user, "wrong-guess-last", address)
        assert throttled.status_code == 429, (route, throttled.text)
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # The right password waits too (the guessing is what is slowed down), from anywhere...
        right = await change_password(api, route, user, user["password"], new_ipv4())
        assert right.status_code == 429, (route, right.text)
        # ...and the account's logins share the counter.
        assert (await login(api, user["email"], user["password"], new_ipv4())).status_code == 429

    # Logins and password changes count together: 6 wrong logins + 4 wrong changes = the limit.
    user = await create_user(api, auth)
    address = new_ipv4()
    for n in range(6):
        assert (await login(api, user["email"], f"wrong-{n}", address)).status_code == 401
    for n in range(4):
        assert (await change_password(api, "password", user, f"wrong-{n}", address)).status_code == 400
    assert (await login(api, user["email"], user["password"], new_ipv4())).status_code == 429


async def test_password_change_guessing_is_throttled_per_address(api: httpx.AsyncClient, auth: Auth) -> None:
    """50 wrong current passwords from one address, spread over accounts below their own limit:
    the address is then refused for every account."""
    address = new_ipv4()
    users = [await create_user(api, auth) for _ in range(6)]
    guesses = 0
    for user in users:
        for _ in range(min(PER_ACCOUNT - 1, PER_ADDRESS - guesses)):
            answer = await change_password(api, "password", user, f"wrong-{guesses}", address)
            assert answer.status_code == 400, answer.text
            guesses += 1
    assert guesses == PER_ADDRESS
    fresh = await create_user(api, auth)
    refused = await change_password(api, "password", fresh, fresh["password"], address)
    assert refused.status_code == 429, refused.text
    assert (await login(api, fresh["email"], fresh["password"], address)).status_code == 429
    # The same account from another address is fine.
    ok = await change_password(api, "password", fresh, fresh["password"], new_ipv4())
    assert ok.status_code == 204, ok.text
    auth.secrets.append("a brand new passphrase")


# ------------------------------------------------------------------- finding 2


async def test_parallel_guesses_cannot_overshoot_the_account_limit(
    api: httpx.AsyncClient, auth: Auth
) -> None:
    """40 concurrent wrong guesses for one account, each from its own address: exactly the limit
    reach password verification (answered 401/400), the rest are refused unverified (429)."""
    user = await create_user(api, auth)
    logins = await asyncio.gather(
        *(login(api, user["email"], f"parallel-wrong-{n}", new_ipv6()) for n in range(40))
    )
    assert Counter(r.status_code for r in logins) == {401: PER_ACCOUNT, 429: 40 - PER_ACCOUNT}

    user = await create_user(api, auth)
    changes = await asyncio.gather(
        *(change_password(api, "password", user, f"parallel-wrong-{n}", new_ipv6()) for n in range(40))
    )
    assert Counter(r.status_code for r in changes) == {400: PER_ACCOUNT, 429: 40 - PER_ACCOUNT}


# ------------------------------------------------------------------- finding 3


async def test_login_applies_the_ip_allowlist(api: httpx.AsyncClient, auth: Auth) -> None:
    user = await create_user(api, auth, ipAllowlist=["203.0.113.0/24", "2001:db8:aa::/48"])
    outside = "198.51.100.251"

    refused = await login(api, user["email"], user["password"], outside)
    assert refused.status_code == 403, refused.text
    assert refused.json() == {"error": NOT_ALLOWED}
    assert user["apiKey"] not in refused.text and "token" not in refused.text
    # The refusal counts as a failure of the address, not of the account.
    conn = await asyncpg.connect(auth.database_url)
    try:
        rows = await conn.fetch(
            "SELECT scope, subject FROM login_failures WHERE subject = $1 OR subject = $2",
            outside,
            user["id"],
        )
    finally:
        await conn.close()
    assert [(r["scope"], r["subject"]) for r in rows] == [("ip", outside)]

    # No address known (no header, or not an address): refused too.
    assert (await login(api, user["email"], user["password"], None)).status_code == 403
    assert (await login(api, user["email"], user["password"], "not-an-address")).status_code == 403
    # A wrong password from outside is the usual 401 (the allow-list is judged after the password).
    assert (await login(api, user["email"], "not-the-password", outside)).status_code == 401
    # Inside the list: IPv4, IPv4-mapped IPv6, IPv6.
    for inside in ("203.0.113.9", "::ffff:203.0.113.10", "2001:db8:aa:1::5"):
        ok = await login(api, user["email"], user["password"], inside)
        assert ok.status_code == 200, (inside, ok.text)
        assert ok.json()["user"]["apiKey"] == user["apiKey"]
    # A user without an allow-list logs in from anywhere, also when no address is known.
    free = await create_user(api, auth)
    assert (await login(api, free["email"], free["password"], None)).status_code == 200
    assert (await login(api, free["email"], free["password"], outside)).status_code == 200


# ------------------------------------------------------------------- finding 4


def _json(body: dict[str, Any], **more: Any) -> bytes:
    """JSON as a client may send it: lone surrogates and NUL as ``\\ud800``/``\\u0000`` escapes."""
    return json.dumps({**body, **more}).encode()


REFUSED_PASSWORDS = {
    "8 spaces": (" " * 8, "whitespace"),
    "8 NULs": (NUL * 8, "NUL"),
    "a control character": ("tab\tinside-it", "control"),
    "7 characters": ("Zq9!xK2", "at least 8"),
    "7 characters after NFKC": ("e\u0301" * 4 + "xyz", "at least 8"),
    "129 characters": ("Zq9" * 43, "at most 128"),
    "common": ("password1", "too common"),
    "common, other case": ("Qwertyuiop", "too common"),
    "common, fullwidth": ("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "too common"),
    "one character repeated": ("zzzzzzzzzz", "repeated"),
    "a lone surrogate": (SURROGATE * 8, "surrogate"),
}


async def test_new_passwords_follow_the_policy_everywhere(api: httpx.AsyncClient, auth: Auth) -> None:
    user = await create_user(api, auth)
    admin = caller(auth.admin_id, "admin")
    me = {**caller(user["id"]), **from_ip(new_ipv4())}

    raw = {"content-type": "application/json"}

    async def attempts(candidate: str) -> list[tuple[str, httpx.Response]]:
        """``candidate`` as a new password on every route that sets one: (field, answer)."""
        new_user = {"email": f"p-{new_id().lower()}@example.com", "firstName": "P", "lastName": "Q"}
        as_admin, as_self = {**admin, **raw}, {**me, **raw}
        path = f"/internal/users/{user['id']}"
        own_change = {"password": candidate, "currentPassword": user["password"]}
        new_password = {"currentPassword": user["password"], "newPassword": candidate}
        return [
            (
                "password",
                await api.post(
                    "/internal/users", content=_json(new_user, password=candidate), headers=as_admin
                ),
            ),
            ("password", await api.patch(path, content=_json({"password": candidate}), headers=as_admin)),
            ("password", await api.put(path, content=_json(own_change), headers=as_self)),
            ("password", await api.patch(path, content=_json(own_change), headers=as_self)),
            (
                "newPassword",
                await api.post("/internal/password", content=_json(new_password), headers=as_self),
            ),
        ]

    for case, (candidate, reason) in REFUSED_PASSWORDS.items():
        for name, answer in await attempts(candidate):
            assert answer.status_code == 400, (case, name, answer.text)
            details = answer.json()["details"]
            assert any(d["field"] == name and reason in d["message"] for d in details), (case, answer.text)
    # The account's own email is refused as its password (context-specific words); a new user
    # has another email, so the first route is skipped.
    for name, answer in (await attempts(user["email"]))[1:]:
        assert answer.status_code == 400 and "email" in answer.json()["error"], (name, answer.text)
    # None of that verified a password (the policy is judged first) or changed the account.
    assert (await login(api, user["email"], user["password"], new_ipv4())).status_code == 200

    # At the bounds: 8 and 128 characters are accepted.
    eight, longest = "Zq9!xK2m", "Zq9" * 42 + "xy"
    created = await api.post(
        "/internal/users",
        json={
            "email": f"p-{new_id().lower()}@example.com",
            "password": eight,
            "firstName": "P",
            "lastName": "Q",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    changed = await api.post(
        "/internal/password", json={"currentPassword": user["password"], "newPassword": longest}, headers=me
    )
    assert changed.status_code == 204, changed.text
    assert (await login(api, user["email"], longest, new_ipv4())).status_code == 200
    auth.secrets += [eight, longest, created.json()["apiKey"]]


# ------------------------------------------------------------------- finding 5


def _bad_strings(limit: int) -> dict[str, str]:
    return {"NUL": f"a{NUL}b", "lone surrogate": f"a{SURROGATE}b", "over-long": "a" * (limit + 1)}


async def test_malformed_input_is_400_on_every_route(api: httpx.AsyncClient, auth: Auth) -> None:
    user = await create_user(api, auth)
    uid = user["id"]
    admin = caller(auth.admin_id, "admin")
    me = caller(uid)
    good_user = {
        "email": "new-user@example.com",
        "password": "a fine passphrase",
        "firstName": "A",
        "lastName": "B",
    }
    # (method, path, caller headers, a valid body, {field: length limit}); a field named
    # "ipAllowlist" is sent as a one-entry list.
    routes: list[tuple[str, str, dict[str, str], dict[str, Any], dict[str, int]]] = [
        (
            "POST",
            "/internal/login",
            {},
            {"email": user["email"], "password": "x"},
            {"email": 320, "password": 1024},
        ),
        ("POST", "/internal/api-keys/resolve", {}, {"apiKey": user["apiKey"]}, {"apiKey": 256}),
        (
            "POST",
            "/internal/users",
            admin,
            good_user,
            {"email": 320, "password": 1024, "firstName": 100, "lastName": 100, "ipAllowlist": 64, "role": 5},
        ),
        *(
            (
                method,
                f"/internal/users/{uid}",
                admin,
                {"firstName": "A"},
                {
                    "email": 320,
                    "firstName": 100,
                    "lastName": 100,
                    "password": 1024,
                    "currentPassword": 1024,
                    "ipAllowlist": 64,
                },
            )
            for method in ("PATCH", "PUT")
        ),
        ("PUT", f"/internal/users/{uid}/ip-allowlist", admin, {"ipAllowlist": []}, {"ipAllowlist": 64}),
        (
            "POST",
            "/internal/password",
            me,
            {"currentPassword": "x", "newPassword": "a fine passphrase"},
            {"currentPassword": 1024, "newPassword": 1024},
        ),
    ]
    cases: list[tuple[str, str, str, dict[str, str], bytes, str]] = []
    for method, path, headers, valid, fields in routes:
        for name, limit in fields.items():
            for what, value in _bad_strings(limit).items():
                bad = _json(valid, **{name: [value] if name == "ipAllowlist" else value})
                cases.append((f"{method} {path} {name} {what}", method, path, headers, bad, name))
        # Unknown keys are named in the answer, escaped and cut short.
        for what, key, shown in (
            ("NUL", f"x{NUL}y", "x\\x00y"),
            ("lone surrogate", f"x{SURROGATE}y", "x\\ud800y"),
            ("over-long", "k" * 5000, "k" * 61 + "..."),
        ):
            unknown = _json(valid, **{key: 1})
            cases.append((f"{method} {path} unknown key with {what}", method, path, headers, unknown, shown))
    # Too many allow-list entries; a body far over every limit.
    many = json.dumps({"ipAllowlist": [f"10.0.{n // 250}.{n % 250}" for n in range(101)]}).encode()
    cases.append(
        ("101 allow-list entries", "PUT", f"/internal/users/{uid}/ip-allowlist", admin, many, "ipAllowlist")
    )
    huge = json.dumps({"email": "a" * 2_000_000 + "@example.com", "password": "x"}).encode()
    cases.append(("a 2 MB email", "POST", "/internal/login", {}, huge, "email"))
    # Path parameters and pagination.
    for what, segment in (("NUL", "ab%00cd"), ("lone surrogate", "ab%ED%A0%80cd"), ("over-long", "a" * 65)):
        for method, path in (
            ("GET", f"/internal/users/{segment}"),
            ("PATCH", f"/internal/users/{segment}"),
            ("PUT", f"/internal/users/{segment}"),
            ("DELETE", f"/internal/users/{segment}"),
            ("POST", f"/internal/users/{segment}/api-key"),
            ("PUT", f"/internal/users/{segment}/ip-allowlist"),
            ("GET", f"/internal/identities/{segment}"),
        ):
            some = b'{"ipAllowlist": []}' if path.endswith("allowlist") else b'{"firstName": "A"}'
            cases.append((f"{method} {path} ({what})", method, path, admin, some, "user_id"))
    for query, name in (
        ("skip=9223372036854775808", "skip"),
        ("skip=1000000001", "skip"),
        ("skip=-1", "skip"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=100000000000000000000000000000", "limit"),
        ("limit=abc", "limit"),
    ):
        cases.append((f"GET /internal/users?{query}", "GET", f"/internal/users?{query}", admin, b"", name))
    # The caller identity header.
    for what, raw_id in (
        ("NUL", "\\u0000"),
        ("lone surrogate", "\\ud800"),
        ("over-long", "u" * 65),
        ("empty", ""),
    ):
        header = {"x-wa-caller": '{"user_id": "' + raw_id + '", "role": "admin"}'}
        cases.append(
            (f"x-wa-caller with {what}", "GET", f"/internal/users/{uid}", header, b"", "x-wa-caller")
        )

    for name, method, path, headers, content, field_name in cases:
        sent = {**headers, "content-type": "application/json"} if content else headers
        answer = await api.request(method, path, content=content or None, headers=sent)
        assert answer.status_code == 400, (name, answer.status_code, answer.text[:300])
        assert field_name in answer.json()["error"], (name, answer.text[:300])
    # Nothing above reached the store: the user is unchanged and can still log in.
    assert (await login(api, user["email"], user["password"], new_ipv4())).status_code == 200


# ------------------------------------------------------------------- finding 6


async def test_a_failing_store_write_leaks_no_secret(api: httpx.AsyncClient, auth: Auth) -> None:
    """With every write to ``users`` refused by the database, creating a user, changing a
    password and rotating a key fail with a 500 naming a correlation id, and the log names the
    error's type but holds no password, hash, sealed key or key."""
    user = await create_user(api, auth)
    conn = await asyncpg.connect(auth.database_url)
    try:
        await conn.execute(
            "CREATE FUNCTION wa_test_refuse_writes() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'writes to users refused by a test'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER wa_test_refuse_writes BEFORE INSERT OR UPDATE ON users "
            "FOR EACH ROW EXECUTE FUNCTION wa_test_refuse_writes()"
        )
        new_password = "failing-write-passphrase"
        auth.secrets.append(new_password)
        body = {"email": "failing@example.com", "password": new_password, "firstName": "F", "lastName": "W"}
        answers = [
            await api.post("/internal/users", json=body, headers=caller(auth.admin_id, "admin")),
            await api.post(
                "/internal/password",
                json={"currentPassword": user["password"], "newPassword": new_password},
                headers={**caller(user["id"]), **from_ip(new_ipv4())},
            ),
            await api.post(f"/internal/users/{user['id']}/api-key", headers=caller(user["id"])),
        ]
    finally:
        await conn.execute("DROP TRIGGER IF EXISTS wa_test_refuse_writes ON users")
        await conn.execute("DROP FUNCTION IF EXISTS wa_test_refuse_writes()")
        await conn.close()
    for answer in answers:
        assert answer.status_code == 500, answer.text
        error = answer.json()["error"]
        assert "correlation id" in error and "None" not in error, error
        assert answer.headers["x-correlation-id"] in error
    log = auth.proc.log.read_text(errors="replace")
    unhandled = [json.loads(line) for line in log.splitlines() if '"unhandled error"' in line]
    assert len(unhandled) == 3 and all("sqlalchemy" in e["error"] for e in unhandled), unhandled
    for marker in ("$argon2id$", "wak_", "[parameters", new_password, user["password"]):
        assert marker not in log, marker


async def test_the_log_holds_no_secrets(auth: Auth) -> None:
    """Last: every password and key of this module's tests, and every stored hash and sealed key,
    are absent from auth's log (LOG_LEVEL=DEBUG)."""
    conn = await asyncpg.connect(auth.database_url)
    try:
        rows = await conn.fetch("SELECT password_hash, api_key_ciphertext FROM users")
    finally:
        await conn.close()
    log = auth.proc.log.read_text(errors="replace")
    assert '"login succeeded"' in log  # the log is the one written by these tests
    sealed = [bytes(r["api_key_ciphertext"]) for r in rows]
    stored = [r["password_hash"] for r in rows] + [b.hex() for b in sealed] + [repr(b)[2:40] for b in sealed]
    for secret in [*auth.secrets, *stored]:
        assert secret not in log, secret[:8] + "..."
    assert "$argon2id$" not in log and "wak_" not in log
