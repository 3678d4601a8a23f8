"""The simulator engine: WhatsApp sessions on the simulated network ``wa.sim`` (WA_ENGINE=simulator).

Every simulator engine (one per worker process) holds one exclusive, auto-deleted queue on
``wa.sim`` and binds on it the routing keys of its sessions (shapes and keys:
:mod:`wa_common.schemas.sim`). A process that dies loses its queue, hence its bindings, at once:
the network then treats its accounts as offline.

Session life (events go to the ``on_event`` callback, from background tasks, never from inside
the call that started them):

- ``start_session(id, None)``: status ``qr``; ``QrCode(attempt=1..sim_qr_codes)`` rotating after
  ``sim_qr_first_s`` then every ``sim_qr_next_s`` seconds, like whatsmeow. A phone scanning the
  current code (or entering a code from :meth:`pair_phone`) → ``Paired(device)`` →
  ``Connected(jid)``. No scan in time → ``LoggedOut(reason="qr_timeout")`` and the session is
  forgotten.
- ``start_session(id, device)``: status ``connecting`` → ``Connected(jid)`` without QR, or
  ``LoggedOut(reason="device_removed")`` if the device was unlinked (by :meth:`logout` on any
  worker, or from the phone).
- Double connections: a live session announces ``presence.<user>`` at connect and every
  ``sim_presence_interval_s``. When a session hears another live session of the *same device*,
  the one that started first is replaced (WhatsApp's "stream replaced"): it counts
  ``wa_sim_double_connections_total``, publishes ``alert.double_connection`` and emits
  ``Disconnected(reason="stream_replaced", will_reconnect=False)``. Each double connection is
  counted once on the whole network.
- Messages: sent to ``msg.<user>`` (mandatory). If no live session holds the recipient, it is an
  external contact: ``Receipt(delivered)`` after ``sim_delivered_ms`` and ``Receipt(read)``
  ``sim_read_ms`` later. A receiving session emits ``Message`` and answers with the same receipts
  over the network. Like whatsmeow, a session gets no ``Message`` for what it sent itself, but does
  for what its account sent from another device (``from_me``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity

from wa_common.bus import EXCHANGE_SIM, Bus, PublishError
from wa_common.ids import new_id
from wa_common.logs import exception_fields, get_logger
from wa_common.schemas.sim import (
    GROUP_SERVER,
    SimCodeEntry,
    SimContact,
    SimControl,
    SimDoubleConnection,
    SimMedia,
    SimMessage,
    SimPresence,
    SimReceipt,
    SimRollCall,
    SimRollCallAnswer,
    SimScan,
    SimSessionInfo,
    code_token,
    is_on_whatsapp,
    jid_user,
    normalise_phone,
    phone_jid,
    qr_token,
)
from wa_common.sim_client import media_type, new_message_id, unroutable
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
    MediaInfo,
    Message,
    OutgoingMedia,
    Paired,
    QrCode,
    Receipt,
    SendResult,
    SessionNotConnected,
    SessionStatus,
    WaContact,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS, SIM_DOUBLE_CONNECTIONS, SIM_EXTERNAL_MESSAGES
from wa_session_worker.engines.settings import EngineSettings
from wa_session_worker.engines.simulator.codes import make_device_id, make_pairing_code, make_qr_code

log = get_logger(__name__)

ENGINE = "simulator"
REVOKED_QUEUE_PREFIX = "wa.sim.revoked."
REVOKED_TTL_MS = 30 * 24 * 3600 * 1000  # how long the network remembers an unlinked device


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
class _Pairing:
    phone: str
    push_name: str | None
    platform: str
    contacts: list[SimContact]


@dataclass
class _Session:
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
    paired: asyncio.Future[_Pairing] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    interrupted: bool = False  # live when this node lost its broker connection

    @property
    def user(self) -> str | None:
        return jid_user(self.jid) if self.jid else None

    @property
    def live(self) -> bool:
        return self.status == SessionStatus.CONNECTED


class SimulatorEngine(Engine):
    """Sessions on the simulated network. ``bus``: a connected bus to share (else the engine opens
    its own connection to ``amqp_url`` in :meth:`start`). ``node``: this worker's name on the
    network (default ``host:pid``)."""

    name = ENGINE

    def __init__(
        self,
        on_event: EventCallback,
        *,
        amqp_url: str | None = None,
        bus: Bus | None = None,
        timings: SimTimings | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(on_event)
        if bus is None and amqp_url is None:
            raise ValueError("SimulatorEngine needs a bus or an amqp_url")
        self._amqp_url = amqp_url
        self._bus = bus
        self._own_bus = bus is None
        self.timings = timings or SimTimings()
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._sessions: dict[str, _Session] = {}
        self._tasks = TaskSupervisor()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._bound: dict[str, int] = {}
        self._routes: dict[str, set[str]] = {}  # routing key -> instance ids
        self._lanes: dict[str, asyncio.Queue[Callable[[], Awaitable[None]]]] = {}
        self.double_connections = 0  # detected by this engine (also the Prometheus counter)

    # --- engine-wide ------------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError("simulator engine is not started")
        return self._bus

    async def start(self) -> None:
        """Connect to the network: declare ``wa.sim``, open this node's queue, answer roll calls."""
        if self._bus is None:
            assert self._amqp_url is not None
            self._bus = Bus(self._amqp_url, service="session-worker-sim")
            await self._bus.connect(declare=False, timeout_s=30.0)
        connection = self._bus.connection
        self._channel = await connection.channel()
        await self._channel.set_qos(prefetch_count=256)
        self._exchange = await self._channel.declare_exchange(
            EXCHANGE_SIM, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self._channel.declare_queue(
            f"wa.sim.node.{new_id()}", durable=False, exclusive=True, auto_delete=True
        )
        await self._queue.bind(self._exchange, routing_key="rollcall")
        await self._queue.consume(self._on_delivery, no_ack=True)
        connection.close_callbacks.add(self._on_connection_lost)
        reconnect = getattr(connection, "reconnect_callbacks", None)
        if reconnect is not None:
            reconnect.add(self._on_reconnected)
        log.info("simulator engine on the network", node=self.node, queue=self._queue.name)

    async def close(self) -> None:
        """Stop every session (no events), then leave the network."""
        for instance_id in list(self._sessions):
            await self._teardown(instance_id)
        await self._tasks.shutdown(timeout_s=5.0)
        if self._channel is not None and not self._channel.is_closed:
            try:
                await self._channel.close()
            except Exception as exc:
                log.warning("simulator channel close failed", error=str(exc))
        self._channel = None
        if self._own_bus and self._bus is not None:
            await self._bus.close(timeout_s=5.0)
            self._bus = None

    # --- Engine API -------------------------------------------------------------------------

    def status(self, instance_id: str) -> SessionStatus:
        session = self._sessions.get(instance_id)
        return session.status if session else SessionStatus.DISCONNECTED

    async def start_session(self, instance_id: str, device: DeviceRecord | None) -> None:
        """Start linking (no ``device``) or reconnect ``device``; returns at once, events follow.

        A no-op if a session of ``instance_id`` already runs here. Raises :class:`EngineError`
        (409) for a device record that is not a simulator device.
        """
        if instance_id in self._sessions:
            log.info("session already running", instance_id=instance_id)
            return
        if device is None:
            session = _Session(instance_id, SessionStatus.QR)
            self._sessions[instance_id] = session
            self._spawn(session, self._link(session), "sim-link")
            return
        device_id = device.data.get("device_id")
        if device.data.get("engine", ENGINE) != ENGINE or not device_id:
            ENGINE_ERRORS.labels(ENGINE, "start").inc()
            raise EngineError("the device record is not a simulator device", status=409)
        session = _Session(
            instance_id,
            SessionStatus.CONNECTING,
            jid=phone_jid(device.jid),
            device_id=str(device_id),
            push_name=device.data.get("push_name"),
            platform=device.data.get("platform"),
            contacts=[SimContact.model_validate(c) for c in device.data.get("contacts", [])],
        )
        self._sessions[instance_id] = session
        self._spawn(session, self._reconnect(session), "sim-reconnect")

    async def stop_session(self, instance_id: str) -> None:
        """Leave the network for this instance (no event; the device stays linked)."""
        await self._teardown(instance_id)

    async def logout(self, instance_id: str) -> None:
        """Unlink the device for good (the network remembers it), stop the session and emit
        ``LoggedOut(reason="logout")``. Raises :class:`SessionNotConnected` if no session runs."""
        session = self._sessions.get(instance_id)
        if session is None:
            raise SessionNotConnected(instance_id)
        if session.device_id:
            await self._revoke(session.device_id)
        await self._teardown(instance_id)
        await self._emit(LoggedOut(instance_id, reason="logout"))

    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        return await self._send(instance_id, to_jid, text=text, media=None, operation="send_text")

    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        if len(media.data) > self.timings.max_media_bytes:
            raise EngineError(
                f"media of {len(media.data)} bytes exceeds {self.timings.max_media_bytes}", status=413
            )
        sim_media = SimMedia(
            mimetype=media.mimetype,
            data_b64=base64.b64encode(media.data).decode(),
            filename=media.filename,
            caption=media.caption,
        )
        return await self._send(
            instance_id, to_jid, text=media.caption or "", media=sim_media, operation="send_media"
        )

    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        """The phone's contact book (given at pairing) plus every chat seen by this session."""
        session = self._live(instance_id)
        contacts = {c.jid: WaContact(jid=c.jid, name=c.name) for c in session.contacts}
        for jid, push_name in session.chats.items():
            known = contacts.get(jid)
            contacts[jid] = WaContact(jid=jid, name=known.name if known else None, push_name=push_name)
        return list(contacts.values())

    async def check_number(self, instance_id: str, phone: str) -> str | None:
        """``<digits>@s.whatsapp.net`` unless the number starts with ``999`` (not on WhatsApp)."""
        self._live(instance_id)
        return phone_jid(phone) if is_on_whatsapp(phone) else None

    async def add_contact(self, instance_id: str, jid: str, name: str | None) -> DeviceRecord | None:
        """Save the contact in the phone's contact book (renaming it when ``name`` is given);
        returns the device record carrying the updated book (a resumed session keeps it)."""
        session = self._live(instance_id)
        book = {c.jid: c for c in session.contacts}
        known = book.get(jid)
        if known is not None and (name is None or known.name == name):
            return None
        book[jid] = SimContact(jid=jid, name=name)
        session.contacts = list(book.values())
        return _device_record(session)

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """A pairing code for ``phone`` while the session shows QR codes (valid until the linking
        attempt times out). Raises :class:`EngineError` 409 if the session is not linking, 400 for
        a number not on WhatsApp."""
        session = self._sessions.get(instance_id)
        if session is None or session.status != SessionStatus.QR:
            raise EngineError(f"instance {instance_id} is not waiting to be linked", status=409)
        digits = _on_whatsapp(phone, normalise_phone)
        if session.pairing_code:
            await self._unbind(session, f"code.{code_token(session.pairing_code)}")
        code = make_pairing_code()
        session.pairing_code, session.pairing_phone = code, digits
        await self._bind(session, f"code.{code_token(code)}")
        return code

    # --- session flows ----------------------------------------------------------------------

    def _spawn(self, session: _Session, coro: Any, name: str) -> None:
        task = self._tasks.spawn(coro, name=name)
        session.tasks.append(task)
        task.add_done_callback(lambda t: session.tasks.remove(t) if t in session.tasks else None)

    async def _link(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        session.paired = loop.create_future()
        pairing: _Pairing | None = None
        for attempt in range(1, self.timings.qr_codes + 1):
            code = make_qr_code()
            if session.qr_token:
                await self._unbind(session, f"qr.{session.qr_token}")
            session.qr_token = qr_token(code)
            await self._bind(session, f"qr.{session.qr_token}")
            validity = self.timings.qr_first_s if attempt == 1 else self.timings.qr_next_s
            await self._emit(QrCode(session.instance_id, code, attempt, validity))
            try:
                pairing = await asyncio.wait_for(asyncio.shield(session.paired), validity)
                break
            except TimeoutError:
                continue
        for key in [k for k in session.keys if k.startswith(("qr.", "code."))]:
            await self._unbind(session, key)
        session.qr_token = session.pairing_code = session.pairing_phone = None
        if pairing is None:
            await self._teardown(session.instance_id)
            await self._emit(LoggedOut(session.instance_id, reason="qr_timeout"))
            return
        session.status = SessionStatus.CONNECTING
        session.jid = phone_jid(pairing.phone)
        session.device_id = make_device_id()
        session.push_name = pairing.push_name
        session.platform = pairing.platform
        session.contacts = pairing.contacts
        device = _device_record(session)
        await self._emit(Paired(session.instance_id, device, pairing.push_name, pairing.platform))
        await self._go_live(session)

    async def _reconnect(self, session: _Session) -> None:
        assert session.device_id is not None
        if await self._is_revoked(session.device_id):
            await self._teardown(session.instance_id)
            await self._emit(LoggedOut(session.instance_id, reason="device_removed"))
            return
        await self._go_live(session)

    async def _go_live(self, session: _Session) -> None:
        user = session.user
        assert user is not None and session.jid is not None
        for kind in ("presence", "msg", "rcpt", "ctl"):
            await self._bind(session, f"{kind}.{user}")
        session.started_at_ms = int(time.time() * 1000)
        session.status = SessionStatus.CONNECTED
        await self._announce(session)
        await self._emit(Connected(session.instance_id, session.jid, session.push_name))
        self._spawn(session, self._heartbeat(session), "sim-presence")

    async def _heartbeat(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.timings.presence_interval_s)
            if session.live:
                try:
                    await self._announce(session)
                except Exception as exc:
                    log.warning("presence announce failed", instance_id=session.instance_id, error=str(exc))

    async def _announce(self, session: _Session) -> None:
        assert session.jid is not None and session.device_id is not None and session.user
        presence = SimPresence(
            jid=session.jid,
            session_id=session.session_id,
            device_id=session.device_id,
            started_at_ms=session.started_at_ms,
            worker=self.node,
        )
        await self._publish(f"presence.{session.user}", presence.to_bytes(), mandatory=False)

    async def _teardown(self, instance_id: str) -> None:
        """Forget the session here: cancel its tasks (except the caller), drop its bindings."""
        session = self._sessions.pop(instance_id, None)
        if session is None:
            return
        session.status = SessionStatus.DISCONNECTED
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current:
                task.cancel()
        if session.paired is not None and not session.paired.done():
            session.paired.cancel()
        for key in list(session.keys):
            try:
                await self._unbind(session, key)
            except Exception as exc:
                log.warning("unbind failed", key=key, error=str(exc))

    async def _send(
        self, instance_id: str, to_jid: str, *, text: str, media: SimMedia | None, operation: str
    ) -> SendResult:
        session = self._live(instance_id)
        if to_jid.endswith("@" + GROUP_SERVER):
            raise EngineError("the simulator has no groups", status=400)
        recipient = _on_whatsapp(to_jid, phone_jid)
        assert session.jid is not None
        message = SimMessage(
            id=new_message_id(),
            from_jid=session.jid,
            to_jid=recipient,
            timestamp=int(time.time()),
            type=media_type(media.mimetype) if media else "conversation",
            text=text,
            push_name=session.push_name,
            media=media,
            sender_device=session.device_id,
        )
        body = message.to_bytes()
        session.chats.setdefault(recipient, None)
        try:
            await self._publish(f"msg.{jid_user(recipient)}", body, mandatory=True)
        except PublishError as exc:
            if not unroutable(exc):
                ENGINE_ERRORS.labels(ENGINE, operation).inc()
                raise EngineError(f"the simulated network refused the message: {exc}") from exc
            SIM_EXTERNAL_MESSAGES.inc()
            self._tasks.spawn(self._external_receipts(session, message), name="sim-external-receipts")
        # Other linked devices of this account see the message as from_me.
        await self._publish(f"msg.{session.user}", body, mandatory=False)
        return SendResult(message.id, message.timestamp)

    async def _external_receipts(self, session: _Session, message: SimMessage) -> None:
        """An external contact: delivered after ``delivered_ms``, read ``read_ms`` later."""
        await asyncio.sleep(self.timings.delivered_ms / 1000)
        for status, delay_ms in (("delivered", 0), ("read", self.timings.read_ms)):
            await asyncio.sleep(delay_ms / 1000)
            if self._sessions.get(session.instance_id) is not session:
                return
            await self._emit(
                Receipt(session.instance_id, message.to_jid, (message.id,), status, int(time.time()))
            )

    async def _answer_receipts(self, message: SimMessage, reader_jid: str) -> None:
        """The receiving session's receipts for ``message``, back to its sender over the network."""
        await asyncio.sleep(self.timings.delivered_ms / 1000)
        for status, delay_ms in (("delivered", 0), ("read", self.timings.read_ms)):
            await asyncio.sleep(delay_ms / 1000)
            receipt = SimReceipt(
                by_jid=reader_jid,
                to_jid=message.from_jid,
                message_ids=[message.id],
                status=status,
                timestamp=int(time.time()),
            )
            await self._publish(f"rcpt.{jid_user(message.from_jid)}", receipt.to_bytes(), mandatory=False)

    async def _revoke(self, device_id: str) -> None:
        """Remember on the network that ``device_id`` is unlinked (a durable, expiring queue)."""
        assert self._channel is not None
        await self._channel.declare_queue(
            REVOKED_QUEUE_PREFIX + device_id, durable=True, arguments={"x-expires": REVOKED_TTL_MS}
        )

    async def _is_revoked(self, device_id: str) -> bool:
        """Whether ``device_id`` was unlinked: a passive declare of its marker queue.

        Done on a plain aiormq channel of the connection: a robust aio-pika channel closed by the
        broker's 404 would reopen itself and leak."""
        transport = getattr(self.bus.connection, "transport", None)
        if transport is None:
            raise EngineError("the simulated network is unreachable", status=503)
        channel = await transport.connection.channel()
        try:
            await channel.queue_declare(REVOKED_QUEUE_PREFIX + device_id, passive=True)
            return True
        except ChannelNotFoundEntity:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()

    # --- network plumbing -------------------------------------------------------------------

    def _live(self, instance_id: str) -> _Session:
        session = self._sessions.get(instance_id)
        if session is None or not session.live:
            raise SessionNotConnected(instance_id)
        return session

    async def _emit(self, event: EngineEvent) -> None:
        try:
            await self.on_event(event)
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, "callback").inc()
            # No exception message: a store error quotes the value it refused (message text,
            # device keys).
            log.error("engine event callback failed", kind=type(event).__name__, **exception_fields(exc))

    async def _publish(self, key: str, body: bytes, *, mandatory: bool) -> None:
        await self.bus.publish(EXCHANGE_SIM, key, body, persistent=False, mandatory=mandatory)

    async def _bind(self, session: _Session, key: str) -> None:
        assert self._queue is not None and self._exchange is not None
        session.keys.add(key)
        self._routes.setdefault(key, set()).add(session.instance_id)
        self._bound[key] = self._bound.get(key, 0) + 1
        if self._bound[key] == 1:
            await self._queue.bind(self._exchange, routing_key=key)

    async def _unbind(self, session: _Session, key: str) -> None:
        assert self._queue is not None and self._exchange is not None
        if key not in session.keys:
            return
        session.keys.discard(key)
        routes = self._routes.get(key)
        if routes is not None:
            routes.discard(session.instance_id)
            if not routes:
                del self._routes[key]
        self._bound[key] -= 1
        if self._bound[key] == 0:
            del self._bound[key]
            if self._channel is not None and not self._channel.is_closed:
                await self._queue.unbind(self._exchange, routing_key=key)

    def _targets(self, key: str) -> list[_Session]:
        return [self._sessions[i] for i in self._routes.get(key, ()) if i in self._sessions]

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        """Queue each delivery on the lane of its routing key: in order per key, concurrent
        across keys (a slow callback for one account does not hold up the others)."""
        key = message.routing_key or ""
        body = message.body
        reply_to = message.reply_to

        async def handle() -> None:
            await self._dispatch(key, body, reply_to)

        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = asyncio.Queue()
            lane.put_nowait(handle)
            self._tasks.spawn(self._run_lane(key, lane), name="sim-lane")
        else:
            lane.put_nowait(handle)

    async def _run_lane(self, key: str, lane: asyncio.Queue[Callable[[], Awaitable[None]]]) -> None:
        while not lane.empty():
            job = lane.get_nowait()
            try:
                await job()
            except Exception:
                ENGINE_ERRORS.labels(ENGINE, "handler").inc()
                log.exception("simulated network message failed", routing_key=key)
        del self._lanes[key]

    async def _dispatch(self, key: str, body: bytes, reply_to: str | None) -> None:
        kind = key.split(".", 1)[0]
        if kind == "qr":
            scan = SimScan.from_bytes(body)
            for session in self._targets(key):
                self._resolve_pairing(session, scan.phone, scan.push_name, scan.platform, scan.contacts)
        elif kind == "code":
            entry = SimCodeEntry.from_bytes(body)
            for session in self._targets(key):
                if session.pairing_phone != normalise_phone(entry.phone):
                    log.warning("pairing code entered on another phone", instance_id=session.instance_id)
                    continue
                self._resolve_pairing(session, entry.phone, entry.push_name, entry.platform, entry.contacts)
        elif kind == "presence":
            await self._on_presence(key, SimPresence.from_bytes(body))
        elif kind == "msg":
            await self._on_message(key, SimMessage.from_bytes(body))
        elif kind == "rcpt":
            receipt = SimReceipt.from_bytes(body)
            for session in self._targets(key):
                if session.live:
                    await self._emit(
                        Receipt(
                            session.instance_id,
                            receipt.by_jid,
                            tuple(receipt.message_ids),
                            receipt.status,
                            receipt.timestamp,
                        )
                    )
        elif kind == "ctl":
            await self._on_control(key, SimControl.from_bytes(body))
        elif kind == "rollcall":
            SimRollCall.from_bytes(body)
            if reply_to:
                answer = SimRollCallAnswer(
                    worker=self.node,
                    sessions=[
                        SimSessionInfo(
                            instance_id=s.instance_id,
                            status=s.status.value,
                            jid=s.jid,
                            push_name=s.push_name,
                            contacts=s.contacts,
                        )
                        for s in self._sessions.values()
                    ],
                )
                await self.bus.publish("", reply_to, answer.to_bytes(), persistent=False, mandatory=False)

    def _resolve_pairing(
        self,
        session: _Session,
        phone: str,
        push_name: str | None,
        platform: str,
        contacts: list[SimContact],
    ) -> None:
        if session.status == SessionStatus.QR and session.paired is not None and not session.paired.done():
            session.paired.set_result(_Pairing(normalise_phone(phone), push_name, platform, contacts))

    async def _on_presence(self, key: str, presence: SimPresence) -> None:
        for session in self._targets(key):
            if (
                not session.live
                or session.device_id != presence.device_id
                or session.session_id == presence.session_id
            ):
                continue
            if (session.started_at_ms, session.session_id) > (presence.started_at_ms, presence.session_id):
                continue  # we are the newer session: the other one is replaced when it hears us
            self.double_connections += 1
            SIM_DOUBLE_CONNECTIONS.inc()
            log.error(
                "double connection: this session was replaced by another live session of its device",
                instance_id=session.instance_id,
                jid=session.jid,
                other_worker=presence.worker,
            )
            alert = SimDoubleConnection(
                jid=presence.jid,
                replaced_session_id=session.session_id,
                replaced_worker=self.node,
                by_session_id=presence.session_id,
                by_worker=presence.worker,
            )
            await self._publish("alert.double_connection", alert.to_bytes(), mandatory=False)
            await self._teardown(session.instance_id)
            await self._emit(
                Disconnected(session.instance_id, reason="stream_replaced", will_reconnect=False)
            )

    async def _on_message(self, key: str, message: SimMessage) -> None:
        receipts_sent = False
        for session in self._targets(key):
            if not session.live or session.jid is None:
                continue
            from_me = message.from_jid == session.jid
            if from_me and message.sender_device == session.device_id:
                continue  # our own send: whatsmeow does not echo it
            chat = message.to_jid if from_me else message.from_jid
            if not from_me:
                session.chats[chat] = message.push_name
            media = None
            if message.media is not None:
                data = base64.b64decode(message.media.data_b64)
                media = MediaInfo(
                    mimetype=message.media.mimetype,
                    size=len(data),
                    filename=message.media.filename,
                    caption=message.media.caption,
                    data=data,
                )
            await self._emit(
                Message(
                    instance_id=session.instance_id,
                    message_id=message.id,
                    chat_jid=chat,
                    sender_jid=message.from_jid,
                    from_me=from_me,
                    timestamp=message.timestamp,
                    type=message.type,
                    text=message.text,
                    push_name=message.push_name,
                    media=media,
                )
            )
            if not from_me and not receipts_sent:
                receipts_sent = True
                self._tasks.spawn(self._answer_receipts(message, session.jid), name="sim-receipts")

    async def _on_control(self, key: str, control: SimControl) -> None:
        for session in self._targets(key):
            if control.device_id is not None and session.device_id != control.device_id:
                continue
            if session.device_id:
                await self._revoke(session.device_id)
            await self._teardown(session.instance_id)
            await self._emit(LoggedOut(session.instance_id, reason=control.reason))

    # --- connection loss --------------------------------------------------------------------

    def _on_connection_lost(self, *_: Any) -> None:
        for session in list(self._sessions.values()):
            if session.live:
                session.status = SessionStatus.CONNECTING
                session.interrupted = True
                self._tasks.spawn(
                    self._emit(Disconnected(session.instance_id, reason="network", will_reconnect=True)),
                    name="sim-disconnected",
                )

    def _on_reconnected(self, *_: Any) -> None:
        self._tasks.spawn(self._after_reconnect(), name="sim-reconnected")

    async def _after_reconnect(self) -> None:
        # aio-pika re-declares this node's queue and its bindings; announce and report live again.
        for session in list(self._sessions.values()):
            if session.interrupted and session.jid:
                session.interrupted = False
                session.status = SessionStatus.CONNECTED
                try:
                    await self._announce(session)
                except Exception as exc:
                    log.warning("presence announce failed", instance_id=session.instance_id, error=str(exc))
                await self._emit(Connected(session.instance_id, session.jid, session.push_name))


def _on_whatsapp(value: str, parse: Callable[[str], str]) -> str:
    """``parse(value)`` (a number or a JID); :class:`EngineError` 400 when it is neither or is not
    on WhatsApp."""
    try:
        parsed = parse(value)
    except ValueError as exc:
        raise EngineError(str(exc), status=400) from exc
    if not is_on_whatsapp(parsed):
        raise EngineError(f"{parsed} is not on WhatsApp", status=400)
    return parsed


def _device_record(session: _Session) -> DeviceRecord:
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
