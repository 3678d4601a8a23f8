"""Phone numbers and JIDs: the one parser of the WhatsApp addresses callers type.

A **phone number** is in international format (country code first), with or without a leading
``+`` or ``00`` and the separators ASCII space, ``-``, ``(``, ``)`` and ``.``
(``+7 (900) 123-45-67``); it is normalised to its digits (``79001234567``). It has 7 to 15
digits, and its length must be possible for its country code (``phonenumbers``'
``is_possible_number``: the stricter numbering-plan check would refuse the simulator's test
numbers such as ``1555…``).

A **JID** is ``<5-20 digits>@s.whatsapp.net`` for a person (the legacy ``@c.us`` is mapped to
it), ``<5-20 digits>@lid`` for a person's LID, and ``<5-40 digits>(-<5-20 digits>)@g.us`` for a
group (old-style ids are creator-timestamp). Each caller says which kinds it takes.

Only ASCII digits count as digits (``str.isdigit`` and regex ``\\d`` also take Arabic-Indic or
fullwidth ones, which would then be stored as chat ids), values are matched whole (``$`` would
allow a final line break), and a line break or a tab is never a separator. A refused value
raises :class:`InvalidAddress`, whose message quotes the value as typed and says why in plain
words.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import phonenumbers

PERSON_SERVER = "s.whatsapp.net"
LEGACY_PERSON_SERVER = "c.us"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"

MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15
PHONE_SEPARATORS = " -()."

_USER = re.compile(r"[0-9]{5,20}")  # the user part of a person's or a LID JID
_DEVICE = re.compile(r"[0-9]{1,4}")  # a linked device's number (``<user>:<device>@…``)
_GROUP = re.compile(r"[0-9]{5,40}(?:-[0-9]{5,20})?")  # a group id
_PHONE_FORM = "international format, country code first, e.g. 79001234567"
_GROUP_FORM = "<digits> or <digits>-<digits>, with or without @g.us"


class InvalidAddress(ValueError):
    """``value`` is not the phone number, JID or group id asked for; ``reason`` says why."""

    def __init__(self, value: str, what: str, reason: str) -> None:
        super().__init__(f"{value!r} is not {what}: {reason}")
        self.value = value
        self.what = what
        self.reason = reason


class Jid(NamedTuple):
    """A parsed JID (``str()`` gives ``<user>@<server>``)."""

    user: str
    server: str

    def __str__(self) -> str:
        return f"{self.user}@{self.server}"


def _odd_character(text: str) -> str | None:
    """Why ``text`` holds a character no address has, or ``None``."""
    for ch in text:
        if not ch.isascii():
            if ch.isdigit():
                return f"{ch!r} is not an ASCII digit (only 0-9 count)"
            return f"it contains {ch!r}, which is not an ASCII character"
        if ch in "\r\n":
            return "it contains a line break"
        if ch.isspace() or not ch.isprintable():
            return f"it contains {ch!r} (white space or a control character)"
    return None


def parse_phone(value: str, *, plan: bool = True) -> str:
    """``+7 (900) 123-45-67`` → ``79001234567``; raises :class:`InvalidAddress`.

    ``plan=False`` skips the country-code and length check of ``phonenumbers`` (the simulated
    network has numbers of its own, such as ``999…`` ones that are "not on WhatsApp").
    """
    what = "a phone number"
    text = "".join(ch for ch in value.strip(" ") if ch not in PHONE_SEPARATORS)
    if text.startswith("+"):
        text = text[1:]
    elif text.startswith("00"):
        text = text[2:]
    odd = _odd_character(text)
    if odd is None:
        bad = next((ch for ch in text if not "0" <= ch <= "9"), None)
        if bad == "+":
            odd = "a + may only stand at the start"
        elif bad is not None:
            odd = (
                f"it contains {bad!r}; a phone number has only the digits 0-9, a leading + or 00, "
                "and the separators space - ( ) ."
            )
    if odd is not None:
        raise InvalidAddress(value, what, odd)
    if not MIN_PHONE_DIGITS <= len(text) <= MAX_PHONE_DIGITS:
        count = f"{len(text)} digits" if text else "no digits"
        raise InvalidAddress(
            value, what, f"it has {count}, not {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} ({_PHONE_FORM})"
        )
    if plan:
        _check_plan(value, text)
    return text


def _check_plan(value: str, digits: str) -> None:
    what = "a phone number"
    no_country = f"it does not begin with a country calling code ({_PHONE_FORM})"
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidAddress(value, what, no_country) from None
        raise InvalidAddress(value, what, f"it cannot be read as one ({_PHONE_FORM})") from None
    if phonenumbers.is_possible_number(parsed):
        return
    code = parsed.country_code
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason == phonenumbers.ValidationResult.INVALID_COUNTRY_CODE:
        raise InvalidAddress(value, what, no_country)
    if reason == phonenumbers.ValidationResult.TOO_SHORT:
        raise InvalidAddress(value, what, f"it is too short for a number with country code +{code}")
    if reason == phonenumbers.ValidationResult.TOO_LONG:
        raise InvalidAddress(value, what, f"it is too long for a number with country code +{code}")
    raise InvalidAddress(value, what, f"no number with country code +{code} has that many digits")


def parse_jid(
    value: str,
    *,
    phones: bool = True,
    groups: bool = True,
    lids: bool = True,
    devices: bool = False,
    plan: bool = True,
) -> Jid:
    """A JID, or (when ``phones``) a phone number, → its :class:`Jid`; raises :class:`InvalidAddress`.

    ``groups``/``lids``: whether ``@g.us``/``@lid`` JIDs are taken. ``devices``: whether a person
    JID may name a linked device (``<user>:<device>@s.whatsapp.net``; the device is dropped).
    ``plan``: see :func:`parse_phone`. The server part is compared without regard to case.
    """
    text = value.strip(" ")
    if phones and "@" not in text:
        return Jid(parse_phone(value, plan=plan), PERSON_SERVER)
    forms = [f"<digits>@{PERSON_SERVER}"]
    if lids:
        forms.append(f"<digits>@{LID_SERVER}")
    if groups:
        forms.append(f"<digits>(-<digits>)@{GROUP_SERVER}")
    expected = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
    what = "a phone number or a JID" if phones else "a JID"
    odd = _odd_character(text)
    if odd is not None:
        raise InvalidAddress(value, what, odd)
    user, at, server = text.partition("@")
    if not at:
        raise InvalidAddress(value, what, f"it has no @ (expected {expected})")
    server = server.lower()
    taken = {PERSON_SERVER: _USER, LEGACY_PERSON_SERVER: _USER}
    if lids:
        taken[LID_SERVER] = _USER
    if groups:
        taken[GROUP_SERVER] = _GROUP
    pattern = taken.get(server)
    if pattern is None:
        raise InvalidAddress(value, what, f"@{server} is not an accepted server (expected {expected})")
    if devices and server in (PERSON_SERVER, LEGACY_PERSON_SERVER):
        person, colon, device = user.partition(":")
        if colon and _DEVICE.fullmatch(device):
            user = person
    if not pattern.fullmatch(user):
        rule = "a group id, <digits> or <digits>-<digits>" if pattern is _GROUP else "5 to 20 digits 0-9"
        raise InvalidAddress(value, what, f"the part before @ must be {rule} (expected {expected})")
    return Jid(user, PERSON_SERVER if server == LEGACY_PERSON_SERVER else server)


def parse_group(value: str) -> Jid:
    """A group id (``<digits>(-<digits>)``, with or without ``@g.us``) → its :class:`Jid`."""
    text = value.strip(" ")
    user = text.removesuffix("@" + GROUP_SERVER)
    odd = _odd_character(text)
    if odd is None and not _GROUP.fullmatch(user):
        odd = f"expected {_GROUP_FORM}"
    if odd is not None:
        raise InvalidAddress(value, "a group id", odd)
    return Jid(user, GROUP_SERVER)
