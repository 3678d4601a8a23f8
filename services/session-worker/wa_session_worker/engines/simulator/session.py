"""One simulated session's state, the network's timings, and what a session hands the worker (its
device record)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wa_common.ids import new_id
from wa_common.schemas.sim import SimContact, is_on_whatsapp, jid_user
from wa_session_worker.engines.base import DeviceRecord, EngineError, SessionStatus
from wa_session_worker.engines.settings import EngineSettings

ENGINE = "simulator"


@dataclass(frozen=True)
class SimTimings:
    """Durations of the simulated network (seconds unless the name says ms)."""

    qr_first_s: float = 60.0
    qr_next_s: float = 20.0
    qr_codes: int = 6
    delivered_ms: int = 300
    read_ms: int = 1500
    presence_interval_s: float = 5.0
    max_media_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> SimTimings:
        return cls(
            qr_first_s=settings.sim_qr_first_s,
            qr_next_s=settings.sim_qr_next_s,
            qr_codes=settings.sim_qr_codes,
            delivered_ms=settings.sim_delivered_ms,
            read_ms=settings.sim_read_ms,
            presence_interval_s=settings.sim_presence_interval_s,
            max_media_bytes=settings.sim_max_media_bytes,
        )


@dataclass
class Pairing:
    """What the phone that scanned a QR code (or entered a pairing code) tells the session."""

    phone: str
    push_name: str | None
    platform: str
    contacts: list[SimContact]


@dataclass
class SimSession:
    instance_id: str
    status: SessionStatus
    session_id: str = field(default_factory=new_id)
    jid: str | None = None
    device_id: str | None = None
    push_name: str | None = None
    platform: str | None = None
    contacts: list[SimContact] = field(default_factory=list)
    chats: dict[str, str | None] = field(default_factory=dict)  # jid -> push name seen
    started_at_ms: int = 0
    qr_token: str | None = None
    pairing_code: str | None = None
    pairing_phone: str | None = None
    paired: asyncio.Future[Pairing] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    interrupted: bool = False  # live when this node lost its broker connection

    @property
    def user(self) -> str | None:
        return jid_user(self.jid) if self.jid else None

    @property
    def live(self) -> bool:
        return self.status == SessionStatus.CONNECTED


def device_record(session: SimSession) -> DeviceRecord:
    """What resumes ``session`` elsewhere: its device, the phone's push name, its contact book."""
    assert session.jid is not None and session.device_id is not None
    return DeviceRecord(
        jid=session.jid,
        data={
            "engine": ENGINE,
            "device_id": session.device_id,
            "phone": jid_user(session.jid),
            "push_name": session.push_name,
            "platform": session.platform,
            "contacts": [c.model_dump() for c in session.contacts],
        },
    )


def on_whatsapp(value: str, parse: Callable[[str], str]) -> str:
    """``parse(value)`` (a number or a JID); :class:`EngineError` 400 when it is neither or is not
    on WhatsApp."""
    try:
        parsed = parse(value)
    except ValueError as exc:
        raise EngineError(str(exc), status=400) from exc
    if not is_on_whatsapp(parsed):
        raise EngineError(f"{parsed} is not on WhatsApp", status=400)
    return parsed
