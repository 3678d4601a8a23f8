"""Contract gaps and first-run friction, gateway side, without a broker (the app is built but not
started): the error for a body that is not JSON, the ``maxInstances`` 429, the access log, the
start-up logging while auth is not up yet, and the documented QR / connection-status shapes."""

from __future__ import annotations

import socket
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from conftest import wait_for
from wa_common.runtime import Runtime
from wa_common.schemas import Caller, Event, EventType, utcnow
from wa_gateway.auth import get_caller
from wa_gateway.auth.setup import setup_auth
from wa_gateway.errors import ApiError
from wa_gateway.limits import MAX_API_CALLS, MAX_INSTANCES, MAX_MESSAGES_SENT, LimitBook
from wa_gateway.main import build_app
from wa_gateway.ratelimit import RateLimiter
from wa_gateway.service import render_qr
from wa_gateway.settings import GatewaySettings

JSON = {"content-type": "application/json"}


def _client(**overrides: Any) -> TestClient:
    # Not entered as a context manager: the lifespan (broker connection) does not run.
    app = build_app(GatewaySettings(profile="embedded", auth_url=_closed_url(), **overrides))
    return TestClient(app, raise_server_exceptions=False)


def _closed_url() -> str:
    """An http URL on which nothing listens (auth is not up)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- 1. a body that is not JSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "line 1, column 2"),
        (b'{"email": "a@example.com",\n  "password": }', "line 2, column 15"),
        (b'{"email": "\xc3\xa4@example.com", "password": "x"', "line 1, column 43"),
    ],
)
def test_a_body_that_is_not_json_says_where_it_breaks(body: bytes, where: str) -> None:
    response = _client().post("/api/auth/login", content=body, headers=JSON)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"].startswith("Invalid request: the body is not valid JSON"), answer
    assert where in answer["error"], answer
    # No "field" that is really a byte offset.
    assert "details" not in answer, answer


def test_a_body_that_is_not_utf8_is_named_as_such() -> None:
    response = _client().post("/api/auth/login", content=b'{"email": "\xff"}', headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid request: the body is not valid JSON (it is not UTF-8 text)"}


def test_field_errors_still_name_their_field() -> None:
    response = _client().post("/api/auth/login", json=["not", "an", "object"])
    assert response.status_code == 400
    assert all(d["field"] == "body" for d in response.json()["details"])


# --- 2. maxInstances is not a periodic limit ---------------------------------------------------


def _refusal(book: LimitBook, user: str, limit: str) -> ApiError:
    with pytest.raises(ApiError) as err:
        book.check(user, limit)
    return err.value


def test_max_instances_429_says_what_the_limit_is_without_a_reset_time() -> None:
    book = LimitBook()
    # As stats reports it (STATS_LIMITS_STATE): no resetsAt for maxInstances.
    book.replace_user(
        "u1",
        [{"userId": "u1", "limit": MAX_INSTANCES, "max": 2, "usage": 2, "resetsAt": None}],
        limit=MAX_INSTANCES,
    )
    refused = _refusal(book, "u1", MAX_INSTANCES)
    assert refused.status == 429
    assert refused.error == (
        "Usage limit exceeded: maxInstances (2 instances at once) reached; "
        "delete an instance or ask an administrator to raise the limit"
    )
    assert "period" not in refused.error and "resets" not in refused.error
    assert not refused.headers  # no Retry-After: waiting does not lift it

    # From a limit_exceeded event (meta.max, meta.resetsAt null), and at start from stats' state.
    book.apply_event(
        Event(
            type=EventType.LIMIT_EXCEEDED,
            user_id="u2",
            data={"exceededLimits": [MAX_INSTANCES]},
            meta={"limit": MAX_INSTANCES, "max": 1, "resetsAt": None},
        )
    )
    assert "(1 instance at once)" in _refusal(book, "u2", MAX_INSTANCES).error
    book.load([{"userId": "u3", "limit": MAX_INSTANCES, "resetsAt": None}])
    assert "(instances at once)" in _refusal(book, "u3", MAX_INSTANCES).error


def test_daily_limits_keep_their_reset_time_and_retry_after() -> None:
    book = LimitBook()
    resets = utcnow() + timedelta(hours=3)
    for limit in (MAX_MESSAGES_SENT, MAX_API_CALLS):
        book.block("u1", limit, resets, maximum=5)
        refused = _refusal(book, "u1", limit)
        assert refused.status == 429
        assert f"{limit} reached for this period; resets at " in refused.error
        assert refused.headers and int(refused.headers["Retry-After"]) > 3 * 3600 - 60


# --- 3. auth not up yet at start ---------------------------------------------------------------


def _auth_start(monkeypatch: pytest.MonkeyPatch, grace_s: float) -> tuple[Runtime, list[int]]:
    """A runtime (no broker) with only the auth layer's hooks, auth not listening; the list
    counts the key fetches."""
    import wa_gateway.auth.setup as auth_setup

    monkeypatch.setattr(auth_setup, "KEYS_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(auth_setup, "KEYS_RETRY_MAX_S", 0.1)
    settings = GatewaySettings(profile="embedded", auth_url=_closed_url())
    runtime = Runtime("gateway", settings, uses_bus=False)
    app = FastAPI()
    setup_auth(app, runtime, settings, RateLimiter(0, 1), start_grace_s=grace_s)
    keys = app.state.auth_layer.keys
    fetches: list[int] = []
    refresh = keys.refresh

    async def counted() -> None:
        fetches.append(1)
        await refresh()

    monkeypatch.setattr(keys, "refresh", counted)
    return runtime, fetches


def _problems(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["log_level"] in ("warning", "error", "critical")]


async def test_auth_not_up_yet_is_info_and_keys_are_fetched_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, fetches = _auth_start(monkeypatch, grace_s=3600.0)
    with capture_logs() as logs:
        await runtime.start()
        try:
            started = [e for e in logs if "signing keys will be fetched on first use" in e["event"]]
            assert started and started[0]["log_level"] == "info", logs
            await wait_for(lambda: len(fetches) >= 4, timeout_s=10, message="background key fetches")
            assert not _problems(logs), logs  # still within the grace period
        finally:
            await runtime.stop()


async def test_auth_still_silent_after_the_grace_period_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = _auth_start(monkeypatch, grace_s=0.5)
    with capture_logs() as logs:
        await runtime.start()
        try:
            found = await wait_for(lambda: _problems(logs), timeout_s=10, message="the warning")
            assert len(found) == 1 and found[0]["log_level"] == "warning", found
            assert "auth still not answering" in found[0]["event"] and found[0]["waited_s"] >= 0
        finally:
            await runtime.stop()


# --- 4. the access log ---------------------------------------------------------------------------


def _access(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "request"]


def test_access_log_one_line_per_request_with_the_route_template() -> None:
    client = _client()
    secret_key = "wak_secret-key-that-must-not-be-logged"
    with capture_logs() as logs:
        client.get(
            "/api/instances/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA/qr?format=png&token=secret-in-query",
            headers={"x-api-key": secret_key, "x-correlation-id": "cid-access-1"},
        )
        client.get("/healthz")
        client.get("/readyz")
        client.get("/metrics")
        client.get("/no/such/route/01JD3Z8M4W8Q2J7ZQ7S9W6X2KA")
        client.get("/dashboard/app.js")
        client.post("/api/auth/login", content=b"{", headers=JSON)
    lines = _access(logs)
    assert [(e["method"], e["route"], e["status"]) for e in lines] == [
        ("GET", "/api/instances/{instanceId}/qr", 503),  # auth is not up
        ("GET", "unmatched", 404),
        ("GET", "/dashboard/{path}", 200),
        ("POST", "/api/auth/login", 400),
    ]
    first = lines[0]
    assert first["correlation_id"] == "cid-access-1"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert "user_id" not in first  # not authenticated
    text = repr(logs)
    for secret in (secret_key, "secret-in-query", "01JD3Z8M4W8Q2J7ZQ7S9W6X2KA", "format=png"):
        assert secret not in text, secret


def test_access_log_names_the_authenticated_user() -> None:
    app = build_app(GatewaySettings(profile="embedded", auth_url=_closed_url()))

    async def caller(request: Request) -> Caller:  # what get_caller leaves on the request
        request.state.caller = Caller(user_id="user-42", role="user")
        return request.state.caller

    app.dependency_overrides[get_caller] = caller
    with capture_logs() as logs:
        TestClient(app, raise_server_exceptions=False).get("/api/auth/me")
    (line,) = _access(logs)
    assert line["route"] == "/api/auth/me" and line["user_id"] == "user-42" and line["status"] == 503


def test_access_log_can_be_turned_off() -> None:
    with capture_logs() as logs:
        _client(access_log=False).get("/no/such/route")
    assert not _access(logs)


# --- 5. QR and connection status shapes ----------------------------------------------------------


def test_qr_image_carries_the_codes_expiry_and_an_etag_per_code() -> None:
    first = render_qr("2@abc,def,ghi,jkl", "png", "2030-01-01T00:00:20.000Z")
    assert first.media_type == "image/png"
    assert first.headers["x-qr-expires-at"] == "2030-01-01T00:00:20.000Z"
    assert first.headers["etag"] == render_qr("2@abc,def,ghi,jkl", "svg").headers["etag"]
    other = render_qr("2@other,def,ghi,jkl", "png")
    assert other.headers["etag"] != first.headers["etag"]
    assert "x-qr-expires-at" not in other.headers  # unknown: not invented


def test_openapi_documents_qr_expiry_logged_out_and_the_linked_account() -> None:
    doc = _client().get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "expiresAt" in schemas["QrCode"]["properties"]
    assert schemas["QrGenerating"]["properties"]["status"]["enum"] == ["generating", "logged_out"]
    assert {"phone", "pushName"} <= set(schemas["ConnectionStatus"]["properties"])
    qr = doc["paths"]["/api/whatsapp/{instanceId}/qr"]["get"]
    assert "logged_out" in qr["responses"]["202"]["description"]
    assert "expiresAt" in qr["description"] and "logged_out" in qr["description"]
    assert {"ETag", "X-QR-Expires-At"} <= set(qr["responses"]["200"]["headers"])
    assert "maxInstances" in doc["info"]["description"]
