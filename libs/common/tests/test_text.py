"""The shared input types (``wa_common.schemas.text``) and the payload models that use them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wa_common.schemas.session import CreateInstance, SaveContact, UpdateInstance
from wa_common.schemas.text import MAX_HEADERS, text_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plain", None),
        ("émoji 🎉", None),
        ("a\x00b", "NUL"),
        ("a\ud800b", "surrogate"),
        ("\udfff", "surrogate"),
    ],
)
def test_text_problem(value: str, problem: str | None) -> None:
    found = text_problem(value)
    assert (found is None) if problem is None else (found is not None and problem in found)


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in exc.value.errors()}


def test_payloads_refuse_nul_and_surrogates_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        CreateInstance.model_validate({"name": "ok", "description": "bad\x00"})
    assert "NUL" in _errors(exc)["description"]
    with pytest.raises(ValidationError) as exc:
        SaveContact.model_validate({"number": "79001234567", "name": "\ud800"})
    assert "surrogate" in _errors(exc)["name"]


def test_payloads_bound_lengths_to_the_store_columns() -> None:
    with pytest.raises(ValidationError) as exc:
        SaveContact.model_validate({"number": "79001234567", "name": "x" * 550})
    assert "name" in _errors(exc)
    SaveContact.model_validate({"number": "79001234567", "name": "x" * 256})


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Name": "caf\u00e9"},  # not ASCII: the dispatcher could not send it
        {"X-Name": "a\r\nInjected: 1"},  # header injection
        {"Bad Name": "v"},  # not an RFC 9110 token
        {"Content-Length": "1"},  # frames the request
        {"X-Webhook-Signature": "forged"},  # the dispatcher's own header
        {"x-a": "1", "X-A": "2"},  # duplicate names
        {f"X-{i}": "v" for i in range(MAX_HEADERS + 1)},  # too many
        {"X-Big": "v" * 4097},  # too long
        {"X-Name\n": "v"},  # a trailing line break (``re.match`` with ``$`` let it through)
        {"X-Name": "v\n"},
        {"User-Agent": "spoofed"},  # set by the dispatcher
    ],
)
def test_webhook_headers_are_refused_when_they_cannot_be_sent(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CreateInstance.model_validate({"name": "ok", "headers": headers})
    with pytest.raises(ValidationError):
        UpdateInstance.model_validate({"webhookSettings": {"headers": headers}})


def test_webhook_headers_accept_ordinary_values() -> None:
    headers = {"Authorization": "Bearer abc.def", "X-Custom": "v 1\t2"}
    assert CreateInstance.model_validate({"name": "ok", "headers": headers}).headers == headers
    update = UpdateInstance.model_validate({"webhookSettings": {"headers": headers, "secret": "s"}})
    assert update.webhook_settings is not None and update.webhook_settings.headers == headers


@pytest.mark.parametrize("value", ["01JD3Z8M4W8Q2J7ZQ7S9W6X2KA", "user-1", "a_b"])
def test_ids_of_ours(value: str) -> None:
    from wa_common.ids import is_id

    assert is_id(value)


@pytest.mark.parametrize("value", ["", "x\n", "a b", "x" * 65, "\uff11", "a\x00", None, 5])
def test_not_ids(value: object) -> None:
    from wa_common.ids import is_id

    assert not is_id(value)


def test_storable_replaces_what_the_store_cannot_hold() -> None:
    from wa_common.schemas.text import storable

    assert storable("a\x00b\ud800c", 4) == "a\ufffdb\ufffd"
    assert storable("plain é 🎉") == "plain é 🎉"
