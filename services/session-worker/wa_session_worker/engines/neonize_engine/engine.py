"""The neonize engine: real WhatsApp through neonize 0.5.2 / whatsmeow (``WA_ENGINE=neonize``).

How it contains the hazards listed in NEONIZE.md:

- Serialised starts and stops: one engine-wide lock is held while a client starts (from
  ``connect()`` until its first event, its failure, or ``START_SETTLE_S``) and while one stops, so
  Go's unguarded global client maps are never written concurrently (hazard 1).
- Guarded calls: ``get_me()`` is never called (the JID comes from ``PairStatusEv``/the device
  record); ``contact.get_all_contacts()`` and every other call run only while the session is
  connected, under the session's lock, which ``stop`` also takes (hazard 2).
- Referenced clients: one client object per session attempt, held by the session until it is
  stopped; its GC finalizer (which would call ``Stop(uuid)`` on a reused uuid) is detached once we
  stopped it ourselves (hazard 3).
- Wrapped handlers: the Go-side callbacks only enqueue the protobuf on the session's queue; one
  task per session translates and emits events in order, catching and counting every failure
  (``wa_engine_errors_total{engine="neonize",operation="handler"}``), with each callback bounded by
  ``CALLBACK_TIMEOUT_S``.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from neonize.utils.jid import build_jid
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from wa_common.jids import InvalidAddress, parse_jid
from wa_common.logs import exception_fields, get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import (
    Connected,
    DeviceRecord,
    Disconnected,
    Engine,
    EngineError,
    EngineEvent,
    EventCallback,
    LoggedOut,
    OutgoingMedia,
    QrCode,
    SendResult,
    SessionNotConnected,
    SessionStatus,
    WaContact,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.neonize_engine.translate import (
    jid_from_fields,
    jid_str,
    media_of,
    translate_logged_out,
    translate_message,
    translate_pair_status,
    translate_receipt,
)
from wa_session_worker.engines.settings import EngineSettings

log = get_logger(__name__)

ENGINE = "neonize"
START_SETTLE_S = 5.0  # the start lock is held at most this long per client start
CALLBACK_TIMEOUT_S = 30.0  # longest a worker callback may take per event
CALL_TIMEOUT_S = 60.0  # longest a neonize call (send, query) may take
QR_FIRST_S = 60.0  # whatsmeow: first QR valid ~60 s, then up to 5 more every ~20 s
QR_NEXT_S = 20.0
QR_GRACE_S = 10.0  # after the last code expired with no new one: qr_timeout
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class _DialFailed(Exception):
    """A connection attempt ended with an error; retried with backoff."""


@dataclass
class _Session:
    instance_id: str
    device: DeviceRecord | None
    status: SessionStatus = SessionStatus.CONNECTING
    jid: str | None = None
    client: NewAClient | None = None
    live: bool = False
    stopping: bool = False
    first_sign: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    qr_attempt: int = 0
    qr_deadline: float = 0.0


class NeonizeEngine(Engine):
    """Real WhatsApp sessions (see the module docstring for guarantees)."""

    name = ENGINE

    def __init__(self, settings: EngineSettings, on_event: EventCallback) -> None:
        super().__init__(on_event)
        self.settings = settings
        self._sessions: dict[str, _Session] = {}
        self._go_lock = asyncio.Lock()
        self._tasks = TaskSupervisor()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def store_kind(self) -> str:
        return "postgres" if self.settings.neonize_store_url.startswith("postgres") else "sqlite"

    # --- engine-wide ------------------------------------------------------------------------

    async def start(self) -> None:
        """Set the Go log level, size the default executor, prepare the SQLite directory."""
        level = self.settings.neonize_go_log_level.upper()
        for name in ("neonize.utils.log", "whatsmeow", "Whatsmeow"):
            logging.getLogger(name).setLevel(level)
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.neonize_executor_threads, thread_name_prefix="neonize"
        )
        asyncio.get_running_loop().set_default_executor(self._executor)
        if self.store_kind == "sqlite":
            await asyncio.to_thread(Path(self.settings.neonize_sqlite_dir).mkdir, parents=True, exist_ok=True)
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
        session = _Session(instance_id, device, jid=device.jid if device else None)
        self._sessions[instance_id] = session
        self._spawn(session, self._pump(session), "neonize-pump")
        self._spawn(session, self._supervise(session), "neonize-session")

    async def stop_session(self, instance_id: str) -> None:
        """Disconnect and forget the session here (no event; the device stays linked)."""
        session = self._sessions.pop(instance_id, None)
        if session is None:
            return
        await self._shutdown(session)

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
        await self._shutdown(session)
        self._delete_sqlite(instance_id)
        await self._emit(LoggedOut(instance_id, reason="logout"))

    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        session = self._live(instance_id)
        response = await self._call(session, "send_text", lambda c: c.send_message(_to_jid(to_jid), text))
        return SendResult(response.ID, int(response.Timestamp))

    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        """Images, videos and audio go as such (neonize sets their mimetype); anything else as a
        document with ``filename`` and ``mimetype``. Bytes only (never a URL: NEONIZE.md)."""
        session = self._live(instance_id)
        to = _to_jid(to_jid)
        kind = media.mimetype.split("/", 1)[0]

        async def send(client: NewAClient) -> Any:
            if kind == "image" and media.mimetype != "image/webp":
                return await client.send_image(to, media.data, caption=media.caption)
            if kind == "video":
                return await client.send_video(to, media.data, caption=media.caption)
            if kind == "audio":
                return await client.send_audio(to, media.data)
            return await client.send_document(
                to,
                media.data,
                caption=media.caption,
                filename=media.filename,
                mimetype=media.mimetype,
            )

        response = await self._call(session, "send_media", send)
        return SendResult(response.ID, int(response.Timestamp))

    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        """Contacts from the device store plus joined groups (only while connected: hazard 2)."""
        session = self._live(instance_id)
        contacts = await self._call(session, "contacts", lambda c: c.contact.get_all_contacts())
        groups = await self._call(session, "contacts", lambda c: c.get_joined_groups())
        result = [
            WaContact(
                jid=jid_str(c.JID),
                name=c.Info.FullName or c.Info.FirstName or None,
                push_name=c.Info.PushName or None,
            )
            for c in contacts
        ]
        result.extend(
            WaContact(jid=jid_str(g.JID), name=g.GroupName.Name or None, is_group=True) for g in groups
        )
        return result

    async def check_number(self, instance_id: str, phone: str) -> str | None:
        session = self._live(instance_id)
        digits = _digits(phone)
        answers = await self._call(session, "check_number", lambda c: c.is_on_whatsapp(f"+{digits}"))
        for answer in answers:
            if answer.IsIn:
                return jid_str(answer.JID)
        return None

    async def add_contact(self, instance_id: str, jid: str, name: str | None) -> DeviceRecord | None:
        """Store ``name`` for ``jid`` in whatsmeow's contact store (in the shared device store,
        so every worker's :meth:`fetch_contacts` shows it); local only, nothing is sent to
        WhatsApp. Without a name there is nothing to store. Returns ``None`` (the device record
        does not change)."""
        if not name:
            return None
        session = self._live(instance_id)
        contact = _to_jid(jid)
        first = name.split(maxsplit=1)[0] if name.strip() else name
        await self._call(session, "add_contact", lambda c: c.contact.put_contact_name(contact, name, first))
        return None

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """A pairing code (``XXXX-XXXX``) for ``phone``; needs the session showing QR codes (the
        socket must be up). Raises :class:`EngineError` 409 otherwise."""
        session = self._sessions.get(instance_id)
        if session is None or session.status != SessionStatus.QR or session.client is None:
            raise EngineError(f"instance {instance_id} is not waiting to be linked", status=409)
        digits = _digits(phone)
        client = session.client
        try:
            async with session.lock:
                return str(await asyncio.wait_for(client.PairPhone(digits, True), CALL_TIMEOUT_S))
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "pair_phone").inc()
            raise EngineError(f"pairing code request failed: {exc}") from exc

    # --- session lifecycle ------------------------------------------------------------------

    def _spawn(self, session: _Session, coro: Any, name: str) -> None:
        task = self._tasks.spawn(coro, name=name)
        session.tasks.append(task)
        task.add_done_callback(lambda t: session.tasks.remove(t) if t in session.tasks else None)

    async def _supervise(self, session: _Session) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(
                multiplier=self.settings.neonize_retry_initial_s, max=self.settings.neonize_retry_max_s
            ),
            retry=retry_if_exception_type(_DialFailed),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._run_once(session)

    def _new_client(self, session: _Session) -> NewAClient:
        if self.store_kind == "postgres":
            name = self.settings.neonize_store_url
        else:
            name = str(Path(self.settings.neonize_sqlite_dir) / f"{session.instance_id}.db")
        if session.device is not None:
            return NewAClient(name, jid=jid_from_fields(session.device.data))
        return NewAClient(name, uuid=session.instance_id, new_device=True)

    def _register(self, session: _Session, client: NewAClient) -> None:
        async def enqueue(_: Any, event: Any) -> None:
            session.inbox.put_nowait(event)
            session.first_sign.set()

        async def on_qr(_: Any, data: bytes) -> None:
            session.inbox.put_nowait(("qr", data.decode() if isinstance(data, bytes) else str(data)))
            session.first_sign.set()

        for kind in (
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
        ):
            client.event(kind)(enqueue)
        client.event.qr(on_qr)

    async def _run_once(self, session: _Session) -> None:
        client = self._new_client(session)
        session.client = client
        self._register(session, client)
        session.first_sign.clear()
        async with self._go_lock:  # hazard 1: one Go-side start at a time
            task = await client.connect()
            waiter = asyncio.ensure_future(session.first_sign.wait())
            try:
                await asyncio.wait(
                    [task, waiter], timeout=START_SETTLE_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
        try:
            await task
            if not session.stopping:
                raise RuntimeError("the WhatsApp connection ended")
        except Exception as exc:
            if session.stopping:
                return
            reason = str(exc) or type(exc).__name__
            ENGINE_ERRORS.labels(ENGINE, "connect").inc()
            log.warning("whatsapp connection failed; retrying", instance_id=session.instance_id, error=reason)
            session.status = SessionStatus.DISCONNECTED
            session.live = False
            await self._stop_client(session)
            await self._emit(Disconnected(session.instance_id, reason=reason, will_reconnect=True))
            raise _DialFailed(reason) from exc

    async def _stop_client(self, session: _Session) -> None:
        """Stop the Go client under the engine lock, then detach its finalizer (hazard 3)."""
        client, session.client = session.client, None
        if client is None:
            return
        session.live = False
        async with session.lock, self._go_lock:
            try:
                await asyncio.wait_for(client.stop(), CALL_TIMEOUT_S)
            except Exception as exc:
                log.warning("neonize stop failed", instance_id=session.instance_id, error=str(exc))
        finalizer = getattr(client, "_stop_finalizer", None)
        if finalizer is not None:
            finalizer.detach()

    async def _shutdown(self, session: _Session) -> None:
        session.stopping = True
        session.status = SessionStatus.DISCONNECTED
        await self._stop_client(session)
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()

    async def _finish(self, session: _Session, event: EngineEvent) -> None:
        """End the session for good (logged out, replaced, banned, QR timeout), then report."""
        if self._sessions.get(session.instance_id) is session:
            del self._sessions[session.instance_id]
        await self._shutdown(session)
        await self._emit(event)

    def _delete_sqlite(self, instance_id: str) -> None:
        if self.store_kind == "sqlite":
            with contextlib.suppress(FileNotFoundError):
                (Path(self.settings.neonize_sqlite_dir) / f"{instance_id}.db").unlink()

    # --- events -----------------------------------------------------------------------------

    async def _pump(self, session: _Session) -> None:
        """Translate and emit this session's events in order; never raises (wrapped handlers)."""
        while not session.stopping:
            event = await session.inbox.get()
            try:
                await self._handle(session, event)
            except asyncio.CancelledError:
                raise
            except Exception:
                ENGINE_ERRORS.labels(ENGINE, "handler").inc()
                log.exception("neonize event handling failed", instance_id=session.instance_id)

    async def _handle(self, session: _Session, event: Any) -> None:
        instance_id = session.instance_id
        if isinstance(event, tuple) and event[0] == "qr":
            session.qr_attempt += 1
            session.status = SessionStatus.QR
            validity = QR_FIRST_S if session.qr_attempt == 1 else QR_NEXT_S
            session.qr_deadline = time.monotonic() + validity + QR_GRACE_S
            self._spawn(session, self._qr_watchdog(session, session.qr_attempt), "neonize-qr-watchdog")
            await self._emit(QrCode(instance_id, event[1], session.qr_attempt, validity))
        elif isinstance(event, PairStatusEv):
            paired = translate_pair_status(instance_id, event, self.store_kind)
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
            self._delete_sqlite(instance_id)
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

    async def _qr_watchdog(self, session: _Session, attempt: int) -> None:
        await asyncio.sleep(max(0.0, session.qr_deadline - time.monotonic()))
        if session.status == SessionStatus.QR and session.qr_attempt == attempt:
            await self._finish(session, LoggedOut(session.instance_id, reason="qr_timeout"))

    async def _download(self, session: _Session, event: Any) -> bytes | None:
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

    # --- helpers ----------------------------------------------------------------------------

    def _live(self, instance_id: str) -> _Session:
        session = self._sessions.get(instance_id)
        if session is None or not session.live or session.client is None:
            raise SessionNotConnected(instance_id)
        return session

    async def _call(self, session: _Session, operation: str, fn: Any) -> Any:
        """Run ``fn(client)`` under the session lock while connected (hazard 2), bounded by
        ``CALL_TIMEOUT_S``; failures become :class:`EngineError` (502) and are counted."""
        async with session.lock:
            client = session.client
            if client is None or not session.live:
                raise SessionNotConnected(session.instance_id)
            try:
                return await asyncio.wait_for(fn(client), CALL_TIMEOUT_S)
            except SessionNotConnected:
                raise
            except Exception as exc:
                ENGINE_ERRORS.labels(ENGINE, operation).inc()
                raise EngineError(f"WhatsApp refused {operation}: {exc}") from exc

    async def _emit(self, event: EngineEvent) -> None:
        try:
            await asyncio.wait_for(self.on_event(event), CALLBACK_TIMEOUT_S)
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "callback").inc()
            # No exception message: a store error quotes the value it refused (message text,
            # device keys).
            log.error("engine event callback failed", kind=type(event).__name__, **exception_fields(exc))


def _digits(phone: str) -> str:
    """The digits of a phone number or person JID (``wa_common.jids``: ASCII digits only; a
    linked device's suffix dropped); :class:`EngineError` 400 otherwise."""
    try:
        return parse_jid(phone, groups=False, lids=False, devices=True, plan=False).user
    except InvalidAddress as exc:
        raise EngineError(str(exc), status=400) from None


def _to_jid(to: str) -> Any:
    """A recipient JID: ``<digits>@s.whatsapp.net`` / a number → person, ``<id>@g.us`` → group."""
    try:
        jid = parse_jid(to, lids=False, devices=True, plan=False)
    except InvalidAddress as exc:
        raise EngineError(str(exc), status=400) from None
    if jid.server == "g.us":
        return build_jid(jid.user, "g.us")
    return build_jid(jid.user)
