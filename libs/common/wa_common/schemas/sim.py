"""Wire shapes of the simulated WhatsApp network (exchange ``wa.sim``, topic), version 1.

The simulator engine of every session worker, the simulator CLI (``python -m
wa_session_worker.sim``) and the gateway's simulator-only admin route speak these messages. They
live here so that no service has to import the worker package. Only the simulator uses them: with
``WA_ENGINE=neonize`` nothing is published on ``wa.sim``.

Addresses. A simulated account is a phone number (digits only, e.g. ``15550001111``); its JID is
``<digits>@s.whatsapp.net``. Routing keys on ``wa.sim`` (``<user>`` = the digits):

============================  ===================================================  ==============
key                           body                                                 bound by
============================  ===================================================  ==============
``qr.<token>``                :class:`SimScan` (a phone scans a QR code)           session showing that QR
``code.<CODE>``               :class:`SimCodeEntry` (code typed on a phone)        session that asked for it
``msg.<user>``                :class:`SimMessage` (a message to ``user``)          live session of ``user``
``rcpt.<user>``               :class:`SimReceipt` (receipts for ``user``'s msgs)   live session of ``user``
``presence.<user>``           :class:`SimPresence` (a session of ``user`` is live)  live session of ``user``
``ctl.<user>``                :class:`SimControl` (the phone unlinks devices)      live session of ``user``
``rollcall``                  :class:`SimRollCall` (who is online?)                every simulator engine
``alert.double_connection``   :class:`SimDoubleConnection` (two live sessions)     observers (tests, CLI)
============================  ===================================================  ==============

``<token>`` is :func:`qr_token` of the QR string and ``<CODE>`` the pairing code without its dash,
so a binding key never holds a topic wildcard. Publishing ``qr.*``, ``code.*`` and ``msg.*`` is
*mandatory*: the broker returns a message no session is bound for, which tells the sender that
the QR/code is unknown or that the recipient is an *external contact* (see the engine).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Literal

from pydantic import Field

from wa_common import jids
from wa_common.ids import new_id
from wa_common.schemas.envelope import _Wire, utcnow

SIM_VERSION = 1
JID_SERVER = jids.PERSON_SERVER
GROUP_SERVER = jids.GROUP_SERVER

# Numbers starting with this prefix are "not on WhatsApp" in the simulated network (check_number).
NOT_ON_WHATSAPP_PREFIX = "999"


class SimError(RuntimeError):
    """A request to the simulated network could not be done (unknown QR/code, no such session)."""


def normalise_phone(phone: str) -> str:
    """Digits of ``phone`` (``+1 555-000 1111`` → ``15550001111``, a person's JID, even a linked
    device's, → its user part), by :func:`wa_common.jids.parse_jid`.

    The simulated network has numbers of its own (``999…``), so a number's country code and
    length are not checked against the numbering plan. Raises
    :class:`~wa_common.jids.InvalidAddress` (a ``ValueError``) for anything else.
    """
    return jids.parse_jid(phone, groups=False, lids=False, devices=True, plan=False).user


def phone_jid(phone: str) -> str:
    """``<digits>@s.whatsapp.net`` of a phone number or JID."""
    return f"{normalise_phone(phone)}@{JID_SERVER}"


def jid_user(jid: str) -> str:
    """The user part (digits) of a person JID; raises ``ValueError`` for anything else."""
    return normalise_phone(jid)


def qr_token(qr_code: str) -> str:
    """Routing token of a QR string: first 32 hex chars of its SHA-256 (no wildcard characters)."""
    return hashlib.sha256(qr_code.strip().encode()).hexdigest()[:32]


def code_token(code: str) -> str:
    """Routing token of a pairing code: ``abcd-efgh`` → ``ABCDEFGH``."""
    return re.sub(r"[^0-9A-Za-z]", "", code).upper()


def is_on_whatsapp(phone: str) -> bool:
    """Whether a number exists on the simulated network (all except ``999…`` numbers)."""
    try:
        return not normalise_phone(phone).startswith(NOT_ON_WHATSAPP_PREFIX)
    except ValueError:
        return False


def default_contact_book(phone: str, count: int = 3) -> list[SimContact]:
    """A deterministic contact book of simulated external contacts for ``phone``."""
    digits = normalise_phone(phone)
    base = int(hashlib.sha256(digits.encode()).hexdigest()[:8], 16) % 10_000_000
    return [
        SimContact(
            jid=f"1555{(base + 1_000_003 * i) % 10_000_000:07d}@{JID_SERVER}", name=f"Sim Contact {i + 1}"
        )
        for i in range(count)
    ]


class SimContact(_Wire):
    jid: str
    name: str | None = None


class SimScan(_Wire):
    """A simulated phone scans a QR code (``qr.<token>``)."""

    v: int = SIM_VERSION
    kind: Literal["scan"] = "scan"
    qr_code: str
    phone: str  # digits
    push_name: str | None = None
    platform: str = "android"
    contacts: list[SimContact] = Field(default_factory=list)


class SimCodeEntry(_Wire):
    """A pairing code typed on a simulated phone (``code.<CODE>``); accepted only from the phone
    number the code was requested for."""

    v: int = SIM_VERSION
    kind: Literal["code"] = "code"
    code: str  # XXXX-XXXX
    phone: str  # digits
    push_name: str | None = None
    platform: str = "android"
    contacts: list[SimContact] = Field(default_factory=list)


class SimMedia(_Wire):
    mimetype: str
    data_b64: str  # standard base64 of the bytes
    filename: str | None = None
    caption: str | None = None


class SimMessage(_Wire):
    """A message from ``from_jid`` to ``to_jid`` (``msg.<user of to_jid>``). A copy with the same
    ``id`` goes to ``msg.<user of from_jid>`` when the sender's phone has linked devices
    (they see it as ``from_me``)."""

    v: int = SIM_VERSION
    kind: Literal["message"] = "message"
    id: str
    from_jid: str
    to_jid: str
    timestamp: int  # Unix seconds
    type: str = "conversation"  # conversation, image, video, audio, document, sticker
    text: str = ""
    push_name: str | None = None
    media: SimMedia | None = None
    # The linked device that sent it, if any: that device does not receive its own copy back.
    sender_device: str | None = None


class SimReceipt(_Wire):
    """``by_jid`` has received/read ``message_ids`` sent by ``to_jid`` (``rcpt.<user of to_jid>``)."""

    v: int = SIM_VERSION
    kind: Literal["receipt"] = "receipt"
    by_jid: str
    to_jid: str
    message_ids: list[str]
    status: Literal["delivered", "read", "played"]
    timestamp: int  # Unix seconds


class SimPresence(_Wire):
    """A live session of ``jid`` announces itself (``presence.<user>``), at connect and then every
    ``WORKER_SIM_PRESENCE_INTERVAL_S``. ``started_at`` orders two sessions of one account: the one
    that started first is *replaced* ("stream replaced") when it hears of the other."""

    v: int = SIM_VERSION
    kind: Literal["presence"] = "presence"
    jid: str
    session_id: str
    device_id: str
    started_at_ms: int  # Unix milliseconds
    worker: str


class SimControl(_Wire):
    """The phone of ``jid`` unlinks a device (``device_id``; ``None`` = every linked device)."""

    v: int = SIM_VERSION
    kind: Literal["unlink"] = "unlink"
    jid: str
    device_id: str | None = None
    reason: str = "device_removed"


class SimDoubleConnection(_Wire):
    """Published on ``alert.double_connection`` by a session replaced by a second live session of
    the same account (each double connection is reported once, by the replaced session)."""

    v: int = SIM_VERSION
    kind: Literal["double_connection"] = "double_connection"
    jid: str
    replaced_session_id: str
    replaced_worker: str
    by_session_id: str
    by_worker: str
    at: datetime = Field(default_factory=utcnow)


class SimRollCall(_Wire):
    """Ask every simulator engine for its sessions (``rollcall``; answers go to ``reply_to``)."""

    v: int = SIM_VERSION
    kind: Literal["rollcall"] = "rollcall"
    id: str = Field(default_factory=new_id)


class SimSessionInfo(_Wire):
    instance_id: str
    status: str
    jid: str | None = None
    push_name: str | None = None
    contacts: list[SimContact] = Field(default_factory=list)


class SimRollCallAnswer(_Wire):
    v: int = SIM_VERSION
    kind: Literal["rollcall_answer"] = "rollcall_answer"
    worker: str
    sessions: list[SimSessionInfo] = Field(default_factory=list)
