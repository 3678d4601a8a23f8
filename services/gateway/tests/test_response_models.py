"""One wire contract: the gateway's routes declare the ``wa_common.schemas`` models the services
build their replies with, FastAPI validates every body on the way out, and ``/openapi.json`` is
generated from those same models.

The app is built but not started (no broker): a stub backend answers the routes' requests with
the replies a service would send, and the caller is an authenticated admin.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from structlog.testing import capture_logs

from wa_common.schemas import Caller, Reply
from wa_common.schemas.cluster import ClusterWorkers, DbStatus
from wa_common.schemas.contacts import DbContactsPage
from wa_common.schemas.instances import (
    ConnectionStatus,
    Instance,
    InstanceDetail,
    InstanceState,
    InstanceWebhookSettings,
    QrCode,
    QrGenerating,
    SuccessMessage,
)
from wa_common.schemas.messages import ChatMessagesPage, MessageId
from wa_common.schemas.session import SessionCommand, SessionQuery
from wa_common.schemas.stats import UserStats
from wa_common.schemas.webhooks import DeliveryPage
from wa_common.schemas.wire import Pagination
from wa_gateway.auth import get_caller
from wa_gateway.main import build_app
from wa_gateway.settings import GatewaySettings

IID = "01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"
AT = datetime(2023, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


class StubBackend:
    """Answers every request named in ``replies`` (by request name) with its reply; records the
    requests."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies
        self.asked: list[str] = []

    async def _answer(self, name: str, *_: Any, **__: Any) -> Reply:
        self.asked.append(str(name))
        return self.replies[str(name)]

    command = query = stats = webhooks = _answer


def _client(replies: dict[str, Reply]) -> TestClient:
    app = build_app(GatewaySettings(profile="embedded"))
    app.state.gateway.backend = StubBackend(replies)
    app.dependency_overrides[get_caller] = lambda: Caller(user_id="admin-1", role="admin")
    return TestClient(app, raise_server_exceptions=False)


def _detail() -> InstanceDetail:
    status = ConnectionStatus(
        ready=True, status="connected", has_qr=False, phone="79001234567", push_name="Jo"
    )
    return InstanceDetail(
        id=IID,
        name="Primary — WhatsApp ✓",
        description=None,
        user_id="admin-1",
        status="connected",
        webhook_url="https://example.com/hook",
        webhook_enabled=True,
        created_at=AT,
        updated_at=AT,
        webhook_settings=InstanceWebhookSettings(instance_id=IID, secret="s", headers={"X-A": "b"}),
        connection_status=status,
    )


def _compact(data: Any) -> bytes:
    """The bytes the gateway answered before response models (Starlette's ``JSONResponse``)."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# --- bodies that fit: relayed as they are, with the reply's status ------------------------------


def test_a_reply_that_fits_is_answered_byte_for_byte() -> None:
    data = _detail().dump()
    response = _client({SessionQuery.GET_INSTANCE: Reply.success(data)}).get(f"/api/instances/{IID}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == _compact(data)
    assert response.json()["createdAt"] == "2023-01-01T12:00:00.123Z"


@pytest.mark.parametrize(
    ("method", "path", "name", "reply"),
    [
        ("get", f"/api/instances/{IID}/qr", SessionQuery.QR, Reply.success(QrCode(qr_code="2@a,b,c"))),
        (
            "get",
            f"/api/whatsapp/{IID}/qr",
            SessionQuery.QR,
            Reply.success(QrGenerating(message="wait", status="logged_out"), status=202),
        ),
        (
            "post",
            f"/api/instances/{IID}/reconnect",
            SessionCommand.RECONNECT,
            Reply.success(SuccessMessage(success=True, message="ok")),
        ),
        (
            "post",
            "/api/instances",
            SessionCommand.CREATE_INSTANCE,
            Reply.success(Instance(id=IID, name="n", status="connecting", created_at=AT, updated_at=AT), 201),
        ),
    ],
)
def test_the_status_and_body_of_the_reply_are_answered(
    method: str, path: str, name: str, reply: Reply
) -> None:
    replies = {name: reply, "stats.limits_state": Reply.success({"blocked": []})}
    body = {"name": "n"} if path == "/api/instances" else None
    response = _client(replies).request(method.upper(), path, json=body)
    assert response.status_code == reply.status, response.text
    assert response.content == _compact(reply.data)


def test_the_short_status_is_read_from_the_workers_model() -> None:
    detail = _detail()
    state = InstanceState(
        instance_id=IID,
        status="connected",
        ready=True,
        has_qr=False,
        last_activity=AT,
        connection_details=detail.connection_status,
    )
    response = _client({SessionQuery.STATUS: Reply.success(state)}).get(f"/api/whatsapp/{IID}/status")
    assert (
        response.status_code == 200
        and response.content == b'{"ready":true,"status":"connected","hasQr":false}'
    )


def test_a_failure_reply_keeps_the_error_shape() -> None:
    reply = Reply.failure(404, "Instance not found")
    response = _client({SessionQuery.GET_INSTANCE: reply}).get(f"/api/instances/{IID}")
    assert response.status_code == 404 and response.json() == {"error": "Instance not found"}


# --- bodies that do not fit: 500, logged ---------------------------------------------------------


def _refused(response: Any, logs: list[MutableMapping[str, Any]], field: str, kind: str) -> None:
    assert response.status_code == 500, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"].startswith("Internal server error (correlation id ")
    assert "secret-value" not in response.text
    found = [e for e in logs if e["event"] == "response does not fit its model"]
    assert len(found) == 1 and found[0]["log_level"] == "error", logs
    assert {"field": field, "type": kind} in found[0]["problems"], found[0]
    assert "secret-value" not in repr(found[0]), "values are never logged"


def test_a_reply_with_an_undeclared_field_is_a_500_and_logged() -> None:
    data = {**_detail().dump(), "surprise": "secret-value"}
    client = _client({SessionQuery.GET_INSTANCE: Reply.success(data)})
    with capture_logs() as logs:
        response = client.get(f"/api/instances/{IID}")
    _refused(response, logs, "response.surprise", "extra_forbidden")


def test_a_reply_missing_a_field_is_a_500_and_logged() -> None:
    data = {"contacts": [], "pagination": {"total": 0, "limit": 1, "skip": 0}}  # no hasMore
    client = _client({SessionQuery.CONTACTS_DB: Reply.success(data)})
    with capture_logs() as logs:
        response = client.get(f"/api/whatsapp/{IID}/contacts/db")
    _refused(response, logs, "response.pagination.hasMore", "missing")


def test_a_reply_the_gateway_reads_is_held_to_its_model_too() -> None:
    """A route that reads the reply (here the short status) fails the same way: 500, never a
    400 that would blame the caller."""
    data = {**_detail().connection_status.dump(), "surprise": "secret-value"}
    state = {"instanceId": IID, "status": "qr", "ready": False, "hasQr": True, "connectionDetails": data}
    client = _client({SessionQuery.STATUS: Reply.success(state)})
    with capture_logs() as logs:
        response = client.get(f"/api/whatsapp/{IID}/status")
    _refused(response, logs, "connectionDetails.surprise", "extra_forbidden")


# --- /openapi.json comes from the same models ----------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return dict(_client({}).get("/openapi.json").json())


def _from_pydantic(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s serialization schema as FastAPI writes it into ``/openapi.json``: ``$defs``
    references point to the components, and ``"default": null`` is left out."""
    text = json.dumps(model.model_json_schema(by_alias=True, mode="serialization"))
    return dict(_without_null_defaults(json.loads(text.replace("#/$defs/", "#/components/schemas/"))))


def _without_null_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


@pytest.mark.parametrize(
    ("method", "path", "status", "model"),
    [
        ("get", "/api/instances/{instanceId}", "200", InstanceDetail),
        ("post", "/api/instances", "201", Instance),
        ("get", "/api/instances/{instanceId}/status", "200", InstanceState),
        ("get", "/api/whatsapp/{instanceId}/qr", "202", QrGenerating),
        ("post", "/api/whatsapp/{instanceId}/send", "200", MessageId),
        ("get", "/api/instances/{instanceId}/contacts/db", "200", DbContactsPage),
        ("get", "/api/instances/{instanceId}/chats/{chatId}/messages", "200", ChatMessagesPage),
        ("get", "/api/admin/workers", "200", ClusterWorkers),
        ("get", "/api/db/status", "200", DbStatus),
        ("get", "/api/stats/user", "200", UserStats),
        ("get", "/api/instances/{instanceId}/webhooks/deliveries", "200", DeliveryPage),
    ],
)
def test_openapi_documents_the_models_the_services_answer_with(
    openapi: dict[str, Any], method: str, path: str, status: str, model: type[BaseModel]
) -> None:
    doc = openapi
    content = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
    ref = content["schema"]["$ref"]
    assert ref == f"#/components/schemas/{model.__name__}"
    component = doc["components"]["schemas"][model.__name__]
    expected = _from_pydantic(model)
    assert component["properties"] == expected["properties"]
    assert sorted(component.get("required", [])) == sorted(expected.get("required", []))
    assert component.get("additionalProperties") is False  # undeclared fields are refused
    for name in expected.get("$defs", {}):
        assert doc["components"]["schemas"][name] == expected["$defs"][name], name


def test_openapi_qr_answers_either_body(openapi: dict[str, Any]) -> None:
    doc = openapi
    schema = doc["paths"]["/api/instances/{instanceId}/qr"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    refs = {s["$ref"] for s in schema["anyOf"]}
    assert refs == {"#/components/schemas/QrCode", "#/components/schemas/QrGenerating"}
    assert (
        doc["components"]["schemas"]["Pagination"]["properties"] == _from_pydantic(Pagination)["properties"]
    )
