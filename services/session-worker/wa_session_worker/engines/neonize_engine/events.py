"""A neonize session's events, in order: the Go callbacks only enqueue protobufs on the session's
inbox (NEONIZE.md: handler exceptions are swallowed, and Go buffers 100 events); one task per
session translates them (:mod:`.translate`), keeps the session's state, and emits engine events,
catching and counting every failure (``wa_engine_errors_total{engine="neonize",
operation="handler"}``).

QR codes: whatsmeow's first is valid ~60 s, then up to 5 more every ~20 s; ``QR_GRACE_S`` after
the last one expired with no new one, the session ends with ``LoggedOut(reason="qr_timeout")``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from neonize.aioze.client import NewAClient
from neonize.aioze.events import (
    ConnectedEv,
    DisconnectedEv,
    KeepAliveRestoredEv,
    KeepAliveTimeoutEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
)

from wa_common.logs import get_logger
from wa_session_worker.engines.base import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    QrCode,
    SessionStatus,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.neonize_engine.session import CALL_TIMEOUT_S, ENGINE, NeonizeSession
from wa_session_worker.engines.neonize_engine.translate import (
    media_of,
    translate_logged_out,
    translate_message,
    translate_pair_status,
    translate_receipt,
)

if TYPE_CHECKING:
    from wa_session_worker.engines.neonize_engine.client import Clients

log = get_logger(__name__)

QR_FIRST_S = 60.0  # whatsmeow: first QR valid ~60 s, then up to 5 more every ~20 s
QR_NEXT_S = 20.0
QR_GRACE_S = 10.0  # after the last code expired with no new one: qr_timeout
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

# The event classes a session subscribes to (:func:`subscribe`) and :meth:`SessionEvents.handle` handles.
HANDLED_EVENTS = (
    PairStatusEv,
    ConnectedEv,
    DisconnectedEv,
    LoggedOutEv,
    StreamReplacedEv,
    TemporaryBanEv,
    KeepAliveTimeoutEv,
    KeepAliveRestoredEv,
    MessageEv,
    ReceiptEv,
)


def subscribe(session: NeonizeSession, client: NewAClient) -> None:
    """Register ``client``'s Go-side callbacks: they only put what they get on the session's inbox
    (and note its first sign of life), for :meth:`SessionEvents.pump` to handle."""

    async def enqueue(_: Any, event: Any) -> None:
        session.inbox.put_nowait(event)
        session.first_sign.set()

    async def on_qr(_: Any, data: bytes) -> None:
        session.inbox.put_nowait(("qr", data.decode() if isinstance(data, bytes) else str(data)))
        session.first_sign.set()

    for kind in HANDLED_EVENTS:
        client.event(kind)(enqueue)
    client.event.qr(on_qr)


class SessionEvents:
    """Event handling of the engine's ``sessions`` (the engine's own table: a session that ends
    is removed from it), whose clients are ``clients``; ``emit`` reports to the worker."""

    def __init__(
        self,
        sessions: dict[str, NeonizeSession],
        clients: Clients,
        emit: Callable[[EngineEvent], Awaitable[None]],
    ) -> None:
        self._sessions = sessions
        self._clients = clients
        self._emit = emit

    async def pump(self, session: NeonizeSession) -> None:
        """Translate and emit this session's events in order; never raises (wrapped handlers)."""
        while not session.stopping:
            event = await session.inbox.get()
            try:
                await self.handle(session, event)
            except asyncio.CancelledError:
                raise
            except Exception:
                ENGINE_ERRORS.labels(ENGINE, "handler").inc()
                log.exception("neonize event handling failed", instance_id=session.instance_id)

    async def handle(self, session: NeonizeSession, event: Any) -> None:
        instance_id = session.instance_id
        if isinstance(event, tuple) and event[0] == "qr":
            session.qr_attempt += 1
            session.status = SessionStatus.QR
            validity = QR_FIRST_S if session.qr_attempt == 1 else QR_NEXT_S
            session.qr_deadline = time.monotonic() + validity + QR_GRACE_S
            self._clients.spawn(
                session, self._qr_watchdog(session, session.qr_attempt), "neonize-qr-watchdog"
            )
            await self._emit(QrCode(instance_id, event[1], session.qr_attempt, validity))
        elif isinstance(event, PairStatusEv):
            paired = translate_pair_status(instance_id, event, self._clients.store_kind)
            if paired is None:
                ENGINE_ERRORS.labels(ENGINE, "pair").inc()
                log.warning("pairing failed", instance_id=instance_id, error=event.Error)
                return
            session.jid = paired.device.jid
            session.device = paired.device
            session.status = SessionStatus.CONNECTING
            await self._emit(paired)
        elif isinstance(event, ConnectedEv | KeepAliveRestoredEv):
            session.status = SessionStatus.CONNECTED
            session.live = True
            await self._emit(Connected(instance_id, session.jid or ""))
        elif isinstance(event, DisconnectedEv | KeepAliveTimeoutEv):
            session.status = SessionStatus.CONNECTING
            session.live = False
            reason = "connection_lost" if isinstance(event, DisconnectedEv) else "keepalive_timeout"
            await self._emit(Disconnected(instance_id, reason=reason, will_reconnect=True))
        elif isinstance(event, LoggedOutEv):
            self._clients.delete_sqlite(instance_id)
            await self._finish(session, translate_logged_out(instance_id, event))
        elif isinstance(event, StreamReplacedEv):
            await self._finish(
                session, Disconnected(instance_id, reason="stream_replaced", will_reconnect=False)
            )
        elif isinstance(event, TemporaryBanEv):
            await self._finish(
                session, Disconnected(instance_id, reason="temporary_ban", will_reconnect=False)
            )
        elif isinstance(event, MessageEv):
            data = await self._download(session, event)
            message = translate_message(instance_id, event, data)
            if message is not None:
                await self._emit(message)
        elif isinstance(event, ReceiptEv):
            receipt = translate_receipt(instance_id, event)
            if receipt is not None:
                await self._emit(receipt)

    async def _finish(self, session: NeonizeSession, event: EngineEvent) -> None:
        """End the session for good (logged out, replaced, banned, QR timeout), then report."""
        if self._sessions.get(session.instance_id) is session:
            del self._sessions[session.instance_id]
        await self._clients.shutdown(session)
        await self._emit(event)

    async def _qr_watchdog(self, session: NeonizeSession, attempt: int) -> None:
        await asyncio.sleep(max(0.0, session.qr_deadline - time.monotonic()))
        if session.status == SessionStatus.QR and session.qr_attempt == attempt:
            await self._finish(session, LoggedOut(session.instance_id, reason="qr_timeout"))

    async def _download(self, session: NeonizeSession, event: Any) -> bytes | None:
        media = media_of(event.Message)
        if media is None or session.client is None or not session.live:
            return None
        if media.fileLength > MAX_DOWNLOAD_BYTES:
            return None
        client = session.client
        try:
            data = await asyncio.wait_for(client.download_any(event.Message), CALL_TIMEOUT_S)
            return bytes(data) if data is not None else None
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "download").inc()
            log.warning("media download failed", instance_id=session.instance_id, error=str(exc))
            return None
