"""Linking and unlinking simulated devices: QR codes, pairing codes, resuming a linked device, and
the unlink (by :meth:`Engine.logout` on any worker, or from the phone).

- Linking: status ``qr``; ``QrCode(attempt=1..qr_codes)`` rotating after ``qr_first_s`` then
  every ``qr_next_s`` seconds, like whatsmeow. A phone scanning the current code (or entering a
  code from :meth:`Linking.pair_phone`) → ``Paired(device)`` → ``Connected(jid)``. No scan in time
  → ``LoggedOut(reason="qr_timeout")`` and the session is forgotten.
- Resuming: ``Connected(jid)`` without QR, or ``LoggedOut(reason="device_removed")`` if the device
  was unlinked: the network remembers unlinked devices.
"""

from __future__ import annotations

import asyncio

from wa_common.logs import get_logger
from wa_common.schemas.sim import (
    SimCodeEntry,
    SimContact,
    SimControl,
    SimScan,
    code_token,
    normalise_phone,
    phone_jid,
    qr_token,
)
from wa_session_worker.engines.base import EngineError, LoggedOut, Paired, QrCode, SessionStatus
from wa_session_worker.engines.simulator.codes import make_device_id, make_pairing_code, make_qr_code
from wa_session_worker.engines.simulator.presence import Presence
from wa_session_worker.engines.simulator.registry import SimSessions
from wa_session_worker.engines.simulator.session import (
    Pairing,
    SimSession,
    SimTimings,
    device_record,
    on_whatsapp,
)

log = get_logger(__name__)


class Linking:
    def __init__(self, sessions: SimSessions, presence: Presence, timings: SimTimings) -> None:
        self.sessions = sessions
        self.network = sessions.network
        self.presence = presence
        self.timings = timings

    async def link(self, session: SimSession) -> None:
        """Show QR codes until a phone links the device (then go live) or the attempt times out."""
        loop = asyncio.get_running_loop()
        session.paired = loop.create_future()
        pairing: Pairing | None = None
        for attempt in range(1, self.timings.qr_codes + 1):
            code = make_qr_code()
            if session.qr_token:
                await self.network.unbind(session, f"qr.{session.qr_token}")
            session.qr_token = qr_token(code)
            await self.network.bind(session, f"qr.{session.qr_token}")
            validity = self.timings.qr_first_s if attempt == 1 else self.timings.qr_next_s
            await self.sessions.emit(QrCode(session.instance_id, code, attempt, validity))
            try:
                pairing = await asyncio.wait_for(asyncio.shield(session.paired), validity)
                break
            except TimeoutError:
                continue
        for key in [k for k in session.keys if k.startswith(("qr.", "code."))]:
            await self.network.unbind(session, key)
        session.qr_token = session.pairing_code = session.pairing_phone = None
        if pairing is None:
            await self.sessions.end(session.instance_id, LoggedOut(session.instance_id, reason="qr_timeout"))
            return
        session.status = SessionStatus.CONNECTING
        session.jid = phone_jid(pairing.phone)
        session.device_id = make_device_id()
        session.push_name = pairing.push_name
        session.platform = pairing.platform
        session.contacts = pairing.contacts
        device = device_record(session)
        await self.sessions.emit(Paired(session.instance_id, device, pairing.push_name, pairing.platform))
        await self.presence.go_live(session)

    async def reconnect(self, session: SimSession) -> None:
        """Resume a linked device, unless the network remembers it as unlinked."""
        assert session.device_id is not None
        if await self.network.is_revoked(session.device_id):
            await self.sessions.end(
                session.instance_id, LoggedOut(session.instance_id, reason="device_removed")
            )
            return
        await self.presence.go_live(session)

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """A pairing code for ``phone`` while the session shows QR codes (valid until the linking
        attempt times out). Raises :class:`EngineError` 409 if the session is not linking, 400 for
        a number not on WhatsApp."""
        session = self.sessions.get(instance_id)
        if session is None or session.status != SessionStatus.QR:
            raise EngineError(f"instance {instance_id} is not waiting to be linked", status=409)
        digits = on_whatsapp(phone, normalise_phone)
        if session.pairing_code:
            await self.network.unbind(session, f"code.{code_token(session.pairing_code)}")
        code = make_pairing_code()
        session.pairing_code, session.pairing_phone = code, digits
        await self.network.bind(session, f"code.{code_token(code)}")
        return code

    def on_scan(self, key: str, scan: SimScan) -> None:
        """A phone scanned the QR code of ``key``."""
        for session in self.sessions.targets(key):
            self._resolve_pairing(session, scan.phone, scan.push_name, scan.platform, scan.contacts)

    def on_code(self, key: str, entry: SimCodeEntry) -> None:
        """A phone entered the pairing code of ``key`` (it must be the phone the code is for)."""
        for session in self.sessions.targets(key):
            if session.pairing_phone != normalise_phone(entry.phone):
                log.warning("pairing code entered on another phone", instance_id=session.instance_id)
                continue
            self._resolve_pairing(session, entry.phone, entry.push_name, entry.platform, entry.contacts)

    def _resolve_pairing(
        self,
        session: SimSession,
        phone: str,
        push_name: str | None,
        platform: str,
        contacts: list[SimContact],
    ) -> None:
        if session.status == SessionStatus.QR and session.paired is not None and not session.paired.done():
            session.paired.set_result(Pairing(normalise_phone(phone), push_name, platform, contacts))

    async def unlink(self, session: SimSession, reason: str) -> None:
        """Unlink the session's device for good (the network remembers it), stop the session and
        emit ``LoggedOut(reason)``."""
        if session.device_id:
            await self.network.revoke(session.device_id)
        await self.sessions.end(session.instance_id, LoggedOut(session.instance_id, reason=reason))

    async def on_control(self, key: str, control: SimControl) -> None:
        """The phone unlinked a device of the account (``control.device_id``, else every one)."""
        for session in self.sessions.targets(key):
            if control.device_id is not None and session.device_id != control.device_id:
                continue
            await self.unlink(session, control.reason)
