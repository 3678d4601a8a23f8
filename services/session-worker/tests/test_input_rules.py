"""The worker's input rules without a bus or a store: recipients and chat ids, the edge check,
media names from URLs, and log-safe descriptions of store errors."""

from __future__ import annotations

from typing import Any

import pytest
from annotated_types import MaxLen
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError

from wa_common.bus.router import RequestError
from wa_common.logs import describe_exception
from wa_common.schemas import Caller, Command, Query
from wa_common.schemas import session as s
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker import failures as errors
from wa_session_worker import media
from wa_session_worker import models as m
from wa_session_worker.service import guard
from wa_session_worker.service.views import to_group_jid, to_jid

ARABIC = "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0660\u0660\u0660\u0662"
FULLWIDTH = "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff10\uff10\uff10\uff12"


@pytest.mark.parametrize(
    ("value", "jid"),
    [
        ("15550000002", "15550000002@s.whatsapp.net"),
        ("+1 555-000-0002", "15550000002@s.whatsapp.net"),
        ("15550000002@s.whatsapp.net", "15550000002@s.whatsapp.net"),
        ("15550000002@c.us", "15550000002@s.whatsapp.net"),
        ("123456789012345@lid", "123456789012345@lid"),
        ("120363025246125486@g.us", "120363025246125486@g.us"),
        ("15550000002-1600000000@g.us", "15550000002-1600000000@g.us"),
    ],
)
def test_recipients_accepted(value: str, jid: str) -> None:
    assert to_jid(value) == jid


@pytest.mark.parametrize(
    "value",
    [
        ARABIC,
        FULLWIDTH,
        f"{ARABIC}@s.whatsapp.net",
        "15550000002\n",
        "\n15550000002",
        "1555\n0000002@s.whatsapp.net",
        "15550000002\t",
        "1555",
        "abc@s.whatsapp.net",
        "15550000002@broadcast",
        "15550000002@newsletter",
        "team@g.us",
        "1-2@g.us",
        "15550000002@s.whatsapp.net\n",
        "",
    ],
)
def test_recipients_refused(value: str) -> None:
    with pytest.raises(RequestError) as refused:
        to_jid(value, "chatId")
    details = refused.value.details or []
    assert refused.value.status == 400 and [d["field"] for d in details] == ["chatId"]


def test_phone_only_fields_refuse_groups_and_lids() -> None:
    for value in ("120363025246125486@g.us", "123456789012345@lid"):
        with pytest.raises(RequestError):
            to_jid(value, groups=False, lids=False)
    assert to_group_jid("120363025246125486", "number") == "120363025246125486@g.us"
    for value in ("abc", f"{ARABIC}@g.us", "1\n2345", "12345@s.whatsapp.net"):
        with pytest.raises(RequestError):
            to_group_jid(value, "number")


def _check(name: str, payload: dict[str, Any], **envelope: Any) -> list[str]:
    kind = Query if name in {q.value for q in Q} else Command
    request = kind(name=name, caller=Caller(user_id="u"), instance_id="i", payload=payload, **envelope)
    reply = guard.check_request(request)
    return [] if reply is None else [d["field"] for d in reply.details or []]


def _max_length(model: type[BaseModel], field: str) -> int:
    for item in model.model_fields[field].metadata:
        if isinstance(item, MaxLen):
            return int(item.max_length)
    raise AssertionError(f"{model.__name__}.{field} has no max_length")


def test_payload_bounds_fit_the_columns() -> None:
    """The shared payload models (validated by every handler: 400 on a violation) bound each
    field to the worker's column, so no caller value can fail a store write for its length."""
    assert _max_length(s.CreateInstance, "name") == guard.column_length(m.instances.c.name)
    assert _max_length(s.UpdateInstance, "name") == guard.column_length(m.instances.c.name)
    assert _max_length(s.SaveContact, "name") == guard.column_length(m.contacts.c.name)
    assert _max_length(s.SaveContact, "push_name") == guard.column_length(m.contacts.c.push_name)
    assert _max_length(s.AddContact, "name") == guard.column_length(m.contacts.c.name)
    assert _max_length(s.SaveContact, "number") <= guard.column_length(m.contacts.c.number)
    assert _max_length(s.AddContact, "phone") <= guard.column_length(m.contacts.c.number)
    assert _max_length(s.SendText, "phone") <= guard.column_length(m.messages.c.remote_jid)
    assert _max_length(s.SendMedia, "filename") <= guard.column_length(m.messages.c.file_name)
    assert _max_length(s.SendMedia, "mimetype") <= guard.column_length(m.messages.c.mime_type)
    assert _max_length(s.ChatMessagesQuery, "chat_id") <= guard.column_length(m.messages.c.remote_jid)


def test_edge_check_refuses_unstorable_envelopes_and_documents() -> None:
    assert guard.MAX_INSTANCE_ID == guard.column_length(m.instances.c.id) == 40
    assert _check(C.SEND_MEDIA, {"phone": "1", "dataBase64": "QUFB" * 100_000}) == []
    assert _check(C.SEND_TEXT, {"phone": "1", "message": "m"}, idempotency_key="k" * 201) == [
        "idempotencyKey"
    ]
    assert _check(Q.ACTIVITY, {"skip": 10**9, "limit": 10}) == []
    assert _check(Q.ACTIVITY, {"skip": 2**60, "actions": ["a\x00"]}) == ["skip", "actions.0"]
    assert _check(Q.EVENTS, {"types": ["t"] * 101}) == ["types"]
    assert _check(Q.CONTACTS_DB, {"search": "s\ud800", "x": 2**53}) == ["search", "x"]
    assert _check(Q.CONTACTS_DB, {"n": {"a\ud800": 1}}) == ["n"]
    secret = "Bearer s3cr3t\x00"
    reply = guard.check_request(
        Command(
            name=C.CREATE_INSTANCE,
            caller=Caller(user_id="u"),
            instance_id="i",
            payload={"name": "n", "headers": {"Authorization": secret}},
        )
    )
    assert reply is not None and "s3cr3t" not in reply.model_dump_json()


def test_media_names_and_types_from_a_server_fit_the_store() -> None:
    assert media._url_filename("/files/report%20v2.pdf") == "report v2.pdf"
    assert media._url_filename("/x/%00evil.png") is None
    assert media._url_filename("/x/a%0Ab.png") is None
    assert media._url_filename("/x/" + "f" * 256) is None
    assert media._served_type("image/png") == "image/png"
    assert media._served_type("image/" + "x" * 200) is None
    assert media._served_type("image/png\x00") is None


def test_store_errors_are_told_apart_without_quoting_values() -> None:
    class Driver(Exception):
        def __init__(self, message: str, sqlstate: str) -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    quoted = DBAPIError("INSERT", {}, Driver("invalid input for query argument $4: 'Bearer s3cr3t'", "22000"))
    assert errors.is_data_error(quoted) and not errors.is_store_unavailable(quoted)
    assert "s3cr3t" not in describe_exception(quoted) and "22000" in describe_exception(quoted)
    too_long = DBAPIError("INSERT", {}, Driver("value too long", "22001"))
    assert errors.data_error_message(too_long) == "a value is longer than the store allows"
    unique = DBAPIError("INSERT", {}, Driver("duplicate key", "23505"))
    assert errors.is_data_error(unique)
    assert errors.is_data_error(OverflowError("Python int too large to convert to SQLite INTEGER"))
    lost = OperationalError("SELECT", {}, ConnectionResetError(104, "connection reset by peer"))
    assert errors.is_store_unavailable(lost) and not errors.is_data_error(lost)
    assert "connection reset" in describe_exception(lost)
    down = DBAPIError("SELECT", {}, Driver("terminating connection due to administrator command", "57P01"))
    assert errors.is_store_unavailable(down)
    assert not errors.is_store_unavailable(RuntimeError("bug"))
