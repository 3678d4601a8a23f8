"""Our address strings → neonize: a phone number's digits, a recipient's JID. Parsed by
``wa_common.jids`` (ASCII digits only), the engine's last line of defence before WhatsApp."""

from __future__ import annotations

from typing import Any

from neonize.utils.jid import build_jid

from wa_common.jids import InvalidAddress, parse_jid
from wa_session_worker.engines.base import EngineError


def phone_digits(phone: str) -> str:
    """The digits of a phone number or person JID (``wa_common.jids``: ASCII digits only; a
    linked device's suffix dropped); :class:`EngineError` 400 otherwise."""
    try:
        return parse_jid(phone, groups=False, lids=False, devices=True, plan=False).user
    except InvalidAddress as exc:
        raise EngineError(str(exc), status=400) from None


def recipient_jid(to: str) -> Any:
    """A recipient JID: ``<digits>@s.whatsapp.net`` / a number → person, ``<id>@g.us`` → group."""
    try:
        jid = parse_jid(to, lids=False, devices=True, plan=False)
    except InvalidAddress as exc:
        raise EngineError(str(exc), status=400) from None
    if jid.server == "g.us":
        return build_jid(jid.user, "g.us")
    return build_jid(jid.user)
