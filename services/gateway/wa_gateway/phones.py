"""Recipient validation and normalisation for the HTTP API (the rules: :mod:`wa_common.jids`).

A recipient is either a JID, normalised (``<digits>@s.whatsapp.net`` for people, ``<id>@g.us``
for groups; the legacy ``@c.us`` suffix is mapped to ``@s.whatsapp.net``), or a phone number in
international format, normalised to digits without ``+`` (``79001234567``), the form the session
workers expect. A refused value is a 400 ``ApiError`` naming the field, whose message quotes the
value as typed and says why.
"""

from __future__ import annotations

from collections.abc import Callable

from wa_common.jids import InvalidAddress, parse_jid, parse_phone
from wa_gateway.errors import ApiError

InvalidPhone = InvalidAddress  # the name the gateway's callers and tests know


def normalise_recipient(raw: str) -> str:
    """A JID (normalised) or a phone number (digits without ``+``). Raises :class:`InvalidPhone`."""
    jid = parse_jid(raw, lids=False)
    return str(jid) if "@" in raw else jid.user


def _or_400(parse: Callable[[str], str], raw: str, field: str) -> str:
    try:
        return parse(raw)
    except InvalidAddress as exc:
        raise ApiError(400, f"Invalid {field}: {exc}", [{"field": field, "message": str(exc)}]) from None


def recipient_or_400(raw: str, field: str = "phone") -> str:
    """:func:`normalise_recipient`, or a 400 ``ApiError`` naming ``field``."""
    return _or_400(normalise_recipient, raw, field)


def number_or_400(raw: str, field: str = "phone") -> str:
    """:func:`~wa_common.jids.parse_phone` (no JIDs), or a 400 ``ApiError`` naming ``field``."""
    return _or_400(parse_phone, raw, field)
