"""Gateway logic that needs no broker: phone numbers, rate limit, limit book, error shape,
body limits, security headers, OpenAPI document (the app is built but not started)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from wa_common.schemas import Event, EventType, utcnow
from wa_gateway.errors import ApiError
from wa_gateway.limits import MAX_API_CALLS, MAX_MESSAGES_SENT, LimitBook
from wa_gateway.main import build_app
from wa_gateway.phones import InvalidPhone, normalise_recipient, recipient_or_400
from wa_gateway.ratelimit import RateLimiter
from wa_gateway.service import event_names, iso_or_400
from wa_gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("79001234567", "79001234567"),
        ("+7 900 123-45-67", "79001234567"),
        ("0079001234567", "79001234567"),
        ("(+49) 151 1234 5678", "4915112345678"),
        ("15550001111", "15550001111"),
        ("79001234567@s.whatsapp.net", "79001234567@s.whatsapp.net"),
        ("79001234567@c.us", "79001234567@s.whatsapp.net"),
        ("120363025246125486@g.us", "120363025246125486@g.us"),
    ],
)
def test_recipients_are_normalised(raw: str, expected: str) -> None:
    assert normalise_recipient(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "abc",
        "123",
        "+",
        "7900123456789012345",
        "x@s.whatsapp.net",
        "1@g.us",
        "a@b",
        "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0661\u0661\u0661\u0661",  # Arabic-Indic digits
        "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff11\uff11\uff11\uff11",  # fullwidth digits
        "1555000\n1111",
        "15550001111\n",
        "\t15550001111",
        "15550001111\n@s.whatsapp.net",
        "15550001111@s.whatsapp.net\n",
        "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff11@s.whatsapp.net",
        "120363025246125486\n@g.us",
    ],
)
def test_bad_recipients_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        normalise_recipient(raw)
    with pytest.raises(ApiError) as err:
        recipient_or_400(raw)
    assert err.value.status == 400
    assert "phone" in err.value.error.lower()
    assert err.value.details and err.value.details[0]["field"] == "phone"


def test_token_bucket_allows_burst_then_paces() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=3)
    now = 100.0
    assert [limiter.acquire("k", now) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k", now)
    assert wait == pytest.approx(0.1)
    assert limiter.retry_after(wait) == "1"
    assert limiter.acquire("k", now + 0.1) == 0.0  # one token refilled
    assert limiter.acquire("other", now) == 0.0  # buckets are per key
    assert RateLimiter(0, 1).acquire("k") == 0.0  # disabled


def test_limit_book_from_events_and_state() -> None:
    book = LimitBook()
    resets = utcnow() + timedelta(hours=2)
    event = Event(
        type=EventType.LIMIT_EXCEEDED,
        user_id="u1",
        data={"instanceId": "i1", "exceededLimits": [MAX_MESSAGES_SENT], "usage": {"messagesSent": 6}},
        meta={"limit": MAX_MESSAGES_SENT, "max": 5, "resetsAt": resets.isoformat()},
    )
    book.apply_event(event)
    book.check("u1", MAX_API_CALLS)  # not blocked for other limits
    book.check("u2", MAX_MESSAGES_SENT)  # nor other users
    with pytest.raises(ApiError) as err:
        book.check("u1", MAX_MESSAGES_SENT)
    assert err.value.status == 429
    assert MAX_MESSAGES_SENT in err.value.error
    assert err.value.headers and int(err.value.headers["Retry-After"]) > 3600
    # A block that has lapsed no longer applies.
    book.block("u3", MAX_API_CALLS, utcnow() - timedelta(seconds=1))
    book.check("u3", MAX_API_CALLS)
    # Stats' state replaces the book; a user's blocks can be replaced after a limits change.
    assert book.load([{"userId": "u4", "limit": MAX_API_CALLS, "resetsAt": resets.isoformat()}]) == 1
    book.check("u1", MAX_MESSAGES_SENT)
    with pytest.raises(ApiError):
        book.check("u4", MAX_API_CALLS)
    book.replace_user("u4", [])
    book.check("u4", MAX_API_CALLS)


def test_query_helpers() -> None:
    assert event_names("connection_opened, message_sent,,connected") == ["connected", "message_sent"]
    assert event_names("") is None
    assert iso_or_400("2023-01-01T00:00:00.000Z", "since") == "2023-01-01T00:00:00.000Z"
    with pytest.raises(ApiError) as err:
        iso_or_400("yesterday", "since")
    assert err.value.details is not None
    assert err.value.status == 400 and err.value.details == [
        {"field": "since", "message": err.value.details[0]["message"]}
    ]


@pytest.fixture(scope="module")
def client() -> TestClient:
    settings = GatewaySettings(profile="embedded", max_body_bytes=2048, max_upload_bytes=4096)
    return TestClient(build_app(settings), raise_server_exceptions=False)  # lifespan not started


def test_unauthenticated_is_401_json(client: TestClient) -> None:
    response = client.get("/api/instances")
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)


def test_unknown_route_is_json_404_with_security_headers(client: TestClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found: no such route"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_validation_error_is_400_with_details() -> None:
    # A probe route on a gateway app: FastAPI's RequestValidationError must become 400, not 422.
    from pydantic import BaseModel

    class Probe(BaseModel):
        email: str
        limit: int

    app = build_app(GatewaySettings(profile="embedded"))

    @app.post("/probe")
    async def probe(body: Probe) -> dict[str, str]:
        return {}

    response = TestClient(app).post("/probe", json={"email": 5})
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("Invalid request")
    assert all(set(d) == {"field", "message"} for d in body["details"])


def test_body_size_limits_are_413(client: TestClient) -> None:
    response = client.post(
        "/api/instances", content=b"{" + b" " * 4096 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "2048" in response.json()["error"]
    # The upload route allows GATEWAY_MAX_UPLOAD_BYTES (+ multipart envelope) but not more.
    big = b"x" * (4096 + 70 * 1024)
    response = client.post("/api/whatsapp/X/send-file", files={"file": ("a.bin", big)}, data={"phone": "1"})
    assert response.status_code == 413
    assert "4096" in response.json()["error"]


def test_openapi_documents_contract(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "the user's API key",
    }
    paths = doc["paths"]
    for family in ("/api/instances/{instanceId}", "/api/whatsapp/{instanceId}"):
        for suffix in (
            "/qr",
            "/send",
            "/send-media",
            "/send-file",
            "/logout",
            "/contacts",
            "/contacts/add",
            "/contacts/db",
            "/contacts/import",
            "/contacts/save",
            "/status",
        ):
            assert family + suffix in paths, family + suffix
    assert "201" in paths["/api/instances"]["post"]["responses"]
    qr = paths["/api/instances/{instanceId}/qr"]["get"]["responses"]
    assert "202" in qr and "image/png" in qr["200"]["content"] and "image/svg+xml" in qr["200"]["content"]
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            if path.startswith("/api") and path != "/api/auth/login":
                assert op.get("security"), (method, path)
    assert paths["/api/instances/{instanceId}/send"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"] == {"$ref": "#/components/schemas/MessageId"}


def test_simulator_routes_follow_setting() -> None:
    on = build_app(GatewaySettings(profile="embedded", simulator_routes=True)).openapi()
    off = build_app(GatewaySettings(profile="embedded", simulator_routes=False)).openapi()
    assert any(p.startswith("/api/admin/sim/") for p in on["paths"])
    assert not any(p.startswith("/api/admin/sim/") for p in off["paths"])


def test_cors_is_configurable() -> None:
    app = build_app(GatewaySettings(profile="embedded", cors_origins="https://app.example.com"))
    response = TestClient(app).options(
        "/api/instances",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    closed = TestClient(build_app(GatewaySettings(profile="embedded"))).get(
        "/healthz", headers={"Origin": "https://evil.example.com"}
    )
    assert "access-control-allow-origin" not in closed.headers


async def test_webhook_url_guard() -> None:
    from wa_gateway.service import check_webhook_url

    for url in (
        "http://127.0.0.1:9000/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://10.0.0.5/",
    ):
        with pytest.raises(ApiError) as err:
            await check_webhook_url(url, allow_private=False)
        assert err.value.status == 400 and err.value.details and err.value.details[0]["field"] == "webhookUrl"
    with pytest.raises(ApiError):
        await check_webhook_url("ftp://example.com/x", allow_private=True)
    await check_webhook_url("http://127.0.0.1:9000/hook", allow_private=True)  # development setting
    await check_webhook_url(
        "https://no-such-host.invalid/hook", allow_private=False
    )  # checked again at delivery
    await check_webhook_url(None, allow_private=False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"webhookSettings": {"headers": {"X-A": "\ud800"}}}, "webhookSettings.headers.X-A"),
        ({"items": [1, 2, 2**63]}, "items.2"),
        ({"maxMessagesSent": -(2**53)}, "maxMessagesSent"),
        ({"text": "x" * 70_000}, "text"),
        ({"a\x00": 1}, "body"),
    ],
)
def test_input_guard_names_the_offending_field(body: object, field: str) -> None:
    from wa_gateway.input_guard import check_json

    with pytest.raises(ApiError) as err:
        check_json(body)
    assert err.value.status == 400
    assert err.value.details and err.value.details[0]["field"] == field


def test_input_guard_accepts_ordinary_json() -> None:
    from wa_common.schemas.text import MAX_INT
    from wa_gateway.input_guard import check_json

    check_json({"name": "Ünïcode 🎉", "n": MAX_INT, "f": 1.5, "l": [None, True, {"k": "v"}]})


def test_input_guard_refuses_deep_nesting() -> None:
    from wa_gateway.input_guard import check_json

    doc: object = "leaf"
    for _ in range(40):
        doc = [doc]
    with pytest.raises(ApiError):
        check_json(doc)


def test_every_api_route_checks_its_input() -> None:
    """The input guard is wired through the caller dependencies (after authentication, rate and
    metering): no ``/api`` route may bypass it."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from wa_gateway.input_guard import guard_input

    def calls(dependant: Dependant) -> set[object]:
        found: set[object] = {dependant.call}
        for sub in dependant.dependencies:
            found |= calls(sub)
        return found

    def routes(items: list[Any]) -> list[tuple[str, APIRoute]]:
        found: list[tuple[str, APIRoute]] = []
        for route in items:
            if isinstance(route, APIRoute):
                found.append((route.path, route))
            elif hasattr(route, "original_router"):  # FastAPI >= 0.16x includes routers lazily
                found += routes(route.original_router.routes)
        return found

    app = build_app(GatewaySettings(profile="embedded", simulator_routes=True))
    api_routes = [(path, r) for path, r in routes(app.routes) if path.startswith("/api")]
    assert len(api_routes) > 40, [p for p, _ in api_routes]
    unguarded = [
        f"{sorted(r.methods or ())} {p}" for p, r in api_routes if guard_input not in calls(r.dependant)
    ]
    assert not unguarded, unguarded


def test_an_unexpected_error_names_the_requests_correlation_id() -> None:
    """The catch-all 500 runs outside the correlation scope; it used to say "correlation id None"."""
    app = build_app(GatewaySettings(profile="embedded"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail that must not reach the client")

    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/boom", headers={"x-correlation-id": "cid-4711"})
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error (correlation id cid-4711)"}


def test_backend_failures_keep_only_the_texts_written_for_clients() -> None:
    """A backend's 500 is hidden (its internals are not the client's), while the 503 and the
    worker's 504 ("not sent: ... too close to its deadline") keep their texts: a client must
    know a send was not made, to retry it with the same Idempotency-Key."""
    from wa_common.schemas import Reply
    from wa_gateway.backend import ensure_ok

    for status, shown in ((500, "Internal server error in a backend service"), (504, "not sent: late")):
        with pytest.raises(ApiError) as caught:
            ensure_ok(Reply.failure(status, "not sent: late"))
        assert caught.value.status == status and shown in caught.value.error
