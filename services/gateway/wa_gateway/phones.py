"""Recipient validation and normalisation (phonenumbers).

A recipient is either a JID, passed through (``<digits>@s.whatsapp.net`` for people,
``<id>@g.us`` for groups; the legacy ``@c.us`` suffix is mapped to ``@s.whatsapp.net``), or a
phone number in international format, with or without ``+``/``00`` and separators
(``+7 900 123-45-67``), normalised to digits without ``+`` (``79001234567``), the form the
session workers expect. A number whose length is impossible for its country code is refused
(``is_possible_number``: the simulator's test numbers must pass, so the stricter numbering-plan
check is not applied). Only ASCII digits count as digits (Python's ``str.isdigit`` and regex
digit classes also accept Arabic-Indic or fullwidth ones), and the only separators are ASCII
space, ``-``, ``(``, ``)`` and ``.``: a line break or a tab makes the value invalid, never part
of a chat id.
"""

from __future__ import annotations

import re

import phonenumbers

from wa_gateway.errors import ApiError

_SEPARATORS = re.compile(r"[ \-().]")
_DIGITS = re.compile(r"[0-9]{7,15}")
_JID_USER = re.compile(r"[0-9]{5,20}(:[0-9]{1,4})?")
_GROUP_ID = re.compile(r"[0-9]{5,40}(-[0-9]{5,20})?")


class InvalidPhone(ValueError):
    """Not a phone number or JID; the message says why."""


def normalise_number(raw: str) -> str:
    """``+7 (900) 123-45-67`` → ``79001234567``. Raises :class:`InvalidPhone`."""
    text = _SEPARATORS.sub("", raw.strip(" "))
    if text.startswith("00"):
        text = text[2:]
    text = text.removeprefix("+")
    if not _DIGITS.fullmatch(text):
        raise InvalidPhone(
            f"{raw!r} is not a phone number: expected international format digits such as 79001234567"
        )
    try:
        parsed = phonenumbers.parse("+" + text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{raw!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone(f"{raw!r} is not a possible phone number for country code +{parsed.country_code}")
    return text


def normalise_recipient(raw: str) -> str:
    """A JID (passed through) or a phone number (digits without ``+``). Raises :class:`InvalidPhone`."""
    value = raw.strip(" ")
    if "@" in value:
        user, _, server = value.partition("@")
        server = server.lower()
        if server == "c.us":
            server = "s.whatsapp.net"
        if server == "s.whatsapp.net" and _JID_USER.fullmatch(user):
            return f"{user}@{server}"
        if server == "g.us" and _GROUP_ID.fullmatch(user):
            return f"{user}@{server}"
        raise InvalidPhone(f"{raw!r} is not a valid JID: expected <digits>@s.whatsapp.net or <group id>@g.us")
    return normalise_number(value)


def recipient_or_400(raw: str, field: str = "phone") -> str:
    """:func:`normalise_recipient`, or a 400 ``ApiError`` naming ``field``."""
    try:
        return normalise_recipient(raw)
    except InvalidPhone as exc:
        raise ApiError(400, f"Invalid phone number: {exc}", [{"field": field, "message": str(exc)}]) from None


def number_or_400(raw: str, field: str = "phone") -> str:
    """:func:`normalise_number` (no JIDs), or a 400 ``ApiError`` naming ``field``."""
    try:
        return normalise_number(raw)
    except InvalidPhone as exc:
        raise ApiError(400, f"Invalid phone number: {exc}", [{"field": field, "message": str(exc)}]) from None
