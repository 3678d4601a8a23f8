"""The neonize engine: real WhatsApp through neonize 0.5.2 / whatsmeow (``WA_ENGINE=neonize``).

How it contains the hazards listed in NEONIZE.md:

- Serialised starts and stops: one engine-wide lock is held while a client starts (from
  ``connect()`` until its first event, its failure, or ``START_SETTLE_S``) and while one stops, so
  Go's unguarded global client maps are never written concurrently (hazard 1; :mod:`.client`).
- Guarded calls: ``get_me()`` is never called (the JID comes from ``PairStatusEv``/the device
  record); ``contact.get_all_contacts()`` and every other call run only while the session is
  connected, under the session's lock, which ``stop`` also takes (hazard 2; :func:`.session.call`).
- Referenced clients: one client object per session attempt, held by the session until it is
  stopped; its GC finalizer (which would call ``Stop(uuid)`` on a reused uuid) is detached once we
  stopped it ourselves (hazard 3; :mod:`.client`).
- Wrapped handlers: the Go-side callbacks only enqueue the protobuf on the session's queue; one
  task per session translates and emits events in order, catching and counting every failure
  (``wa_engine_errors_total{engine="neonize",operation="handler"}``), with each callback bounded by
  ``CALLBACK_TIMEOUT_S`` (:mod:`.events`).
- Executor sizing: each live session holds one thread of the loop's default executor for its
  whole life, so :meth:`start` installs a default executor of ``neonize_executor_threads``.
- Go log level: ``neonize.utils.log`` (whose level neonize forwards to Go) and ``whatsmeow.*`` are
  set to ``neonize_go_log_level`` before anything connects.

Failure handling: whatsmeow does not retry a first connection; offline it fails at once with
``NeonizeError('failed to dial whatsapp web websocket ...')``. The session then reports
``Disconnected(reason=<that error>, will_reconnect=True)`` and is retried with capped exponential
backoff (tenacity: ``neonize_retry_initial_s`` doubling up to ``neonize_retry_max_s``) until it is
stopped. The worker process is never affected.

Device store: ``neonize_store_url`` (PostgreSQL, shared by every worker, so any worker resumes a
session) or, when empty, one SQLite file per instance under ``neonize_sqlite_dir`` (one machine).
The device record given in ``Paired`` holds the device JID (user, device number, server) and the
store kind; the keys themselves stay in the store.

The parts: :mod:`.client` (clients and their threads), :mod:`.events` (event handling),
:mod:`.sending`, :mod:`.contacts`, :mod:`.addresses`, :mod:`.session` (one session's state), and
this module, which implements :class:`Engine` on them.
"""

from __future__ import annotations

import asyncio

from wa_common.logs import get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import (
    DeviceRecord,
    Engine,
    EngineError,
    EngineEvent,
    EventCallback,
    LoggedOut,
    OutgoingMedia,
    SendResult,
    SessionNotConnected,
    SessionStatus,
    WaContact,
    emit_event,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.neonize_engine import contacts, sending
from wa_session_worker.engines.neonize_engine.addresses import phone_digits
from wa_session_worker.engines.neonize_engine.client import Clients
from wa_session_worker.engines.neonize_engine.events import SessionEvents
from wa_session_worker.engines.neonize_engine.session import CALL_TIMEOUT_S, ENGINE, NeonizeSession
from wa_session_worker.engines.settings import EngineSettings

log = get_logger(__name__)

CALLBACK_TIMEOUT_S = 30.0  # longest a worker callback may take per event


class NeonizeEngine(Engine):
    """Real WhatsApp sessions (see the module docstring for guarantees)."""

    name = ENGINE

    def __init__(self, settings: EngineSettings, on_event: EventCallback) -> None:
        super().__init__(on_event)
        self.settings = settings
        self._sessions: dict[str, NeonizeSession] = {}
        self._tasks = TaskSupervisor()
        self._clients = Clients(settings, self._tasks, self._emit)
        self._events = SessionEvents(self._sessions, self._clients, self._emit)

    @property
    def store_kind(self) -> str:
        return self._clients.store_kind

    # --- engine-wide ------------------------------------------------------------------------

    async def start(self) -> None:
        """Set the Go log level, size the default executor, prepare the SQLite directory."""
        await self._clients.start()
        log.info(
            "neonize engine ready", store=self.store_kind, threads=self.settings.neonize_executor_threads
        )

    async def close(self) -> None:
        """Stop every session (their devices stay linked)."""
        for instance_id in list(self._sessions):
            await self.stop_session(instance_id)
        await self._tasks.shutdown(timeout_s=10.0)

    # --- Engine API -------------------------------------------------------------------------

    def status(self, instance_id: str) -> SessionStatus:
        session = self._sessions.get(instance_id)
        return session.status if session else SessionStatus.DISCONNECTED

    async def start_session(self, instance_id: str, device: DeviceRecord | None) -> None:
        """Start linking (no ``device``: QR events) or resume ``device`` from the store; returns at
        once. A no-op if the session already runs here. Raises :class:`EngineError` (409) for a
        device record of another engine or store kind."""
        if instance_id in self._sessions:
            return
        if device is not None and (
            device.data.get("engine") != ENGINE or device.data.get("store") != self.store_kind
        ):
            ENGINE_ERRORS.labels(ENGINE, "start").inc()
            raise EngineError(
                f"the device record is not a neonize device in a {self.store_kind} store", status=409
            )
        session = NeonizeSession(instance_id, device, jid=device.jid if device else None)
        self._sessions[instance_id] = session
        self._clients.spawn(session, self._events.pump(session), "neonize-pump")
        self._clients.spawn(session, self._clients.supervise(session), "neonize-session")

    async def stop_session(self, instance_id: str) -> None:
        """Disconnect and forget the session here (no event; the device stays linked)."""
        session = self._sessions.pop(instance_id, None)
        if session is None:
            return
        await self._clients.shutdown(session)

    async def logout(self, instance_id: str) -> None:
        """Unlink the device (its keys are deleted), stop, emit ``LoggedOut(reason="logout")``."""
        session = self._live(instance_id)
        client = session.client
        assert client is not None
        try:
            async with session.lock:
                await asyncio.wait_for(client.logout(), CALL_TIMEOUT_S)
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "logout").inc()
            raise EngineError(f"logout failed: {exc}") from exc
        self._sessions.pop(instance_id, None)
        await self._clients.shutdown(session)
        self._clients.delete_sqlite(instance_id)
        await self._emit(LoggedOut(instance_id, reason="logout"))

    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        return await sending.send_text(self._live(instance_id), to_jid, text)

    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        """Images, videos and audio go as such; anything else as a document (:mod:`.sending`)."""
        return await sending.send_media(self._live(instance_id), to_jid, media)

    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        """Contacts from the device store plus joined groups (only while connected: hazard 2)."""
        return await contacts.fetch_contacts(self._live(instance_id))

    async def check_number(self, instance_id: str, phone: str) -> str | None:
        return await contacts.check_number(self._live(instance_id), phone)

    async def add_contact(self, instance_id: str, jid: str, name: str | None) -> DeviceRecord | None:
        """Store ``name`` for ``jid`` in whatsmeow's contact store (in the shared device store,
        so every worker's :meth:`fetch_contacts` shows it); local only, nothing is sent to
        WhatsApp. Without a name there is nothing to store. Returns ``None`` (the device record
        does not change)."""
        if not name:
            return None
        await contacts.save_contact_name(self._live(instance_id), jid, name)
        return None

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """A pairing code (``XXXX-XXXX``) for ``phone``; needs the session showing QR codes (the
        socket must be up). Raises :class:`EngineError` 409 otherwise."""
        session = self._sessions.get(instance_id)
        if session is None or session.status != SessionStatus.QR or session.client is None:
            raise EngineError(f"instance {instance_id} is not waiting to be linked", status=409)
        digits = phone_digits(phone)
        client = session.client
        try:
            async with session.lock:
                return str(await asyncio.wait_for(client.PairPhone(digits, True), CALL_TIMEOUT_S))
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "pair_phone").inc()
            raise EngineError(f"pairing code request failed: {exc}") from exc

    # --- helpers ----------------------------------------------------------------------------

    def _live(self, instance_id: str) -> NeonizeSession:
        session = self._sessions.get(instance_id)
        if session is None or not session.live or session.client is None:
            raise SessionNotConnected(instance_id)
        return session

    async def _emit(self, event: EngineEvent) -> None:
        await emit_event(self.on_event, event, engine=ENGINE, timeout_s=CALLBACK_TIMEOUT_S)
