"""The session worker answers with the models the gateway declares (``wa_common.schemas``): its
bodies are built as those models, so a field a model does not declare fails where the body is
built, and a body that carries one fails validation where it is read. No services are started."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from wa_common.schemas.contacts import DbContact, DbContactsPage
from wa_common.schemas.events import WebhookSettings
from wa_common.schemas.instances import InstanceDetail, InstanceList, InstanceState, QrGenerating
from wa_common.schemas.wire import ApiModel, Pagination
from wa_session_worker.repository.records import ContactRec, InstanceRec
from wa_session_worker.service import views

AT = datetime(2023, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _instance(**changes: Any) -> InstanceRec:
    fields: dict[str, Any] = {
        "id": "01JD3Z8M4W8Q2J7ZQ7S9W6X2KA",
        "user_id": "user-1",
        "name": "Primary",
        "shard": 3,
        "status": "qr",
        "created_at": AT,
        "updated_at": AT,
        "qr_code": "2@a,b,c",
        "webhook_settings": WebhookSettings(secret="s").dump(),
        "device_jid": "79001234567:3@s.whatsapp.net",
        "push_name": "Jo",
    }
    return InstanceRec(**(fields | changes))


def _contact() -> ContactRec:
    return ContactRec(
        id="c1",
        instance_id="i1",
        number="79001234567",
        remote_jid="79001234567@s.whatsapp.net",
        created_at=AT,
        updated_at=AT,
    )


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (lambda: views.instance_detail(_instance()), InstanceDetail),
        (lambda: views.instance_list([_instance(), _instance(id="x", status="connected")]), InstanceList),
        (lambda: views.status_body(_instance()), InstanceState),
        (lambda: views.contacts_page([_contact()], 3, 1, 0), DbContactsPage),
        (lambda: views.qr_pending("generating"), QrGenerating),
    ],
)
def test_worker_bodies_are_the_declared_models_and_round_trip(body: Any, model: type[ApiModel]) -> None:
    built = body()
    assert type(built) is model
    wire = built.dump()
    assert model.load(wire).dump() == wire  # what the gateway validates is what the worker sent


def test_times_are_utc_milliseconds_on_the_wire() -> None:
    wire = views.instance_detail(_instance()).dump()
    assert wire["createdAt"] == "2023-01-01T12:00:00.123Z"
    assert wire["connectionStatus"] == {
        "ready": False,
        "status": "qr",
        "hasQr": True,
        "phone": "79001234567",
        "pushName": "Jo",
    }
    assert next(iter(wire["webhookSettings"])) == "instanceId"


def test_a_worker_body_with_an_undeclared_field_is_refused() -> None:
    wire = views.instance_detail(_instance()).dump()
    with pytest.raises(ValidationError) as err:
        InstanceDetail.load({**wire, "surprise": 1})
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    assert err.value.errors()[0]["loc"] == ("surprise",)
    nested = {**wire, "connectionStatus": {**wire["connectionStatus"], "surprise": 1}}
    with pytest.raises(ValidationError):
        InstanceDetail.load(nested)
    with pytest.raises(ValidationError):  # built in code, an undeclared field fails at once
        DbContact(**dict(views.contact_body(_contact())), surprise=1)  # type: ignore[call-arg]


def test_paging_is_the_shared_pagination() -> None:
    page = views.contacts_page([_contact()], total=3, limit=1, skip=1)
    assert page.pagination == Pagination.of(3, 1, 1)
    assert page.dump()["pagination"] == {"total": 3, "limit": 1, "skip": 1, "hasMore": True}
