"""The one parser of phone numbers and JIDs (``wa_common.jids``)."""

from __future__ import annotations

import pytest

from wa_common.jids import InvalidAddress, Jid, parse_group, parse_jid, parse_phone
from wa_common.schemas.sim import is_on_whatsapp, normalise_phone, phone_jid

ARABIC = "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0661\u0661\u0661\u0661"
FULLWIDTH = "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff11\uff11\uff11\uff11"


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        ("79001234567", "79001234567"),
        ("+7 900 123-45-67", "79001234567"),
        ("+7 (900) 123.45.67", "79001234567"),
        ("0079001234567", "79001234567"),
        ("(+49) 151 1234 5678", "4915112345678"),
        ("15550001111", "15550001111"),  # the simulator's numbers are possible, if not valid
        (" 447700900123 ", "447700900123"),
    ],
)
def test_phone_numbers_are_normalised_to_digits(value: str, digits: str) -> None:
    assert parse_phone(value) == digits


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("99912345678", "does not begin with a country calling code"),
        ("123", "has 3 digits, not 7 to 15"),
        ("+", "has no digits"),
        ("", "has no digits"),
        ("7900123456789012345", "has 19 digits"),
        ("abc", "it contains 'a'"),
        ("+7 900 12+3", "a + may only stand at the start"),
        (ARABIC, "is not an ASCII digit"),
        (FULLWIDTH, "is not an ASCII digit"),
        ("1555000\n1111", "line break"),
        ("15550001111\n", "line break"),
        ("\t15550001111", "white space or a control character"),
        ("1555000_1111", "it contains '_'"),
        ("+33 12345", "too short for a number with country code +33"),
        ("+1 555 000 11112", "too long for a number with country code +1"),
    ],
)
def test_refused_numbers_say_what_was_typed_and_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        parse_phone(value)
    message = str(refused.value)
    assert message.startswith(f"{value!r} is not a phone number: "), message
    assert reason in message and refused.value.value == value
    assert "plus-sign" not in message  # phonenumbers' own words, about a + nobody typed


def test_plan_false_skips_only_the_numbering_plan() -> None:
    assert parse_phone("999123456", plan=False) == "999123456"
    for value in ("123", ARABIC, "1555\n0001111"):
        with pytest.raises(InvalidAddress):
            parse_phone(value, plan=False)


# The worker's test_input_rules.py runs the usual JIDs through ``to_jid`` (this parser); here the
# edges of the rules.
@pytest.mark.parametrize(
    ("value", "jid"),
    [
        ("0015550000002", "15550000002@s.whatsapp.net"),
        ("15550000002@S.WhatsApp.Net", "15550000002@s.whatsapp.net"),
        ("12345@s.whatsapp.net", "12345@s.whatsapp.net"),
        ("12345678901234567890@c.us", "12345678901234567890@s.whatsapp.net"),
        ("12345@LID", "12345@lid"),
        (" 12345-12345@g.us ", "12345-12345@g.us"),
    ],
)
def test_jids_are_normalised(value: str, jid: str) -> None:
    parsed = parse_jid(value)
    assert str(parsed) == jid and parsed == Jid(*jid.split("@"))


@pytest.mark.parametrize(
    "value",
    [
        "x@s.whatsapp.net",
        "1234@s.whatsapp.net",
        "123456789012345678901@s.whatsapp.net",
        f"{ARABIC}@s.whatsapp.net",
        "15550000002:1@s.whatsapp.net",  # a device, unless devices=True
        "15550000002@newsletter",
        "15550000002@s.whatsapp.net\r",
        "15550000002@g.us.evil",
        "1234@g.us",
        "120363025246125486\n@g.us",
        "a@b",
        "@",
    ],
)
def test_bad_jids_are_refused(value: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        parse_jid(value)
    assert str(refused.value).startswith(f"{value!r} is not a phone number or a JID: ")


def test_options_narrow_what_is_taken() -> None:
    for value in ("120363025246125486@g.us", "123456789012345@lid"):
        with pytest.raises(InvalidAddress) as refused:
            parse_jid(value, groups=False, lids=False)
        assert "is not an accepted server (expected <digits>@s.whatsapp.net)" in str(refused.value)
    with pytest.raises(InvalidAddress) as refused:
        parse_jid("15550000002", phones=False)
    assert str(refused.value) == "'15550000002' is not a JID: it has no @ (expected " + (
        "<digits>@s.whatsapp.net, <digits>@lid or <digits>(-<digits>)@g.us)"
    )
    assert parse_jid("15550000002:12@s.whatsapp.net", devices=True) == Jid("15550000002", "s.whatsapp.net")
    with pytest.raises(InvalidAddress):
        parse_jid("15550000002:12345@s.whatsapp.net", devices=True)


def test_group_ids() -> None:
    assert str(parse_group("120363025246125486")) == "120363025246125486@g.us"
    assert str(parse_group("120363025246125486@g.us")) == "120363025246125486@g.us"
    assert str(parse_group("15550000002-1600000000")) == "15550000002-1600000000@g.us"
    for value in ("12345-1@g.us", "1234", "12345@G.US", f"12345-{FULLWIDTH}", "12345\t@g.us", "12345@lid"):
        with pytest.raises(InvalidAddress) as refused:
            parse_group(value)
        assert str(refused.value).startswith(f"{value!r} is not a group id: ")


def test_the_simulator_uses_the_same_parser() -> None:
    assert normalise_phone("+1 555-000 1111") == "15550001111"
    assert normalise_phone("15550001111:3@s.whatsapp.net") == "15550001111"
    assert phone_jid("999123456") == "999123456@s.whatsapp.net"  # the simulator's own numbers
    assert not is_on_whatsapp("999123456") and is_on_whatsapp("15550001111")
    for value in (ARABIC, "1555", "15550001111@g.us", "abc15550001111"):
        with pytest.raises(ValueError):
            normalise_phone(value)
        assert not is_on_whatsapp(value)
