"""The simulator engine: WhatsApp sessions on the simulated network ``wa.sim`` (WA_ENGINE=simulator).

Every simulator engine (one per worker process) holds one exclusive, auto-deleted queue on
``wa.sim`` and binds on it the routing keys of its sessions (shapes and keys:
:mod:`wa_common.schemas.sim`). A process that dies loses its queue, hence its bindings, at once:
the network then treats its accounts as offline.

Session life (events go to the ``on_event`` callback, from background tasks, never from inside
the call that started them):

- ``start_session(id, None)``: status ``qr``, QR codes, then ``Paired(device)`` →
  ``Connected(jid)``, or ``LoggedOut(reason="qr_timeout")`` (:mod:`.linking`).
- ``start_session(id, device)``: status ``connecting`` → ``Connected(jid)`` without QR, or
  ``LoggedOut(reason="device_removed")`` if the device was unlinked (:mod:`.linking`).
- Double connections: the older live session of one device is replaced
  (``Disconnected(reason="stream_replaced", will_reconnect=False)``, :mod:`.presence`).
- Messages and receipts: :mod:`.messages`; contacts: :mod:`.contacts`.

The parts: :mod:`.network` (this node's queue, bindings, publishing), :mod:`.registry` (the
sessions of this node), :mod:`.session` (one session's state), and this module, which implements
:class:`Engine` on them and routes each delivery by its routing key.
"""

from __future__ import annotations

import os
import socket

from wa_common.bus import Bus
from wa_common.logs import get_logger
from wa_common.schemas.sim import (
    SimCodeEntry,
    SimContact,
    SimControl,
    SimMessage,
    SimPresence,
    SimReceipt,
    SimRollCall,
    SimScan,
    is_on_whatsapp,
    phone_jid,
)
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import (
    DeviceRecord,
    Engine,
    EngineError,
    EventCallback,
    OutgoingMedia,
    SendResult,
    SessionNotConnected,
    SessionStatus,
    WaContact,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.simulator.contacts import contact_list, save_contact
from wa_session_worker.engines.simulator.linking import Linking
from wa_session_worker.engines.simulator.messages import Messaging
from wa_session_worker.engines.simulator.network import SimNetwork
from wa_session_worker.engines.simulator.presence import Presence
from wa_session_worker.engines.simulator.registry import SimSessions
from wa_session_worker.engines.simulator.session import ENGINE, SimSession, SimTimings

log = get_logger(__name__)


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
        self.timings = timings or SimTimings()
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._tasks = TaskSupervisor()
        self._network = SimNetwork(self._dispatch, self._tasks, amqp_url=amqp_url, bus=bus)
        self._sessions = SimSessions(self._network, self._tasks, on_event)
        self._presence = Presence(self._sessions, self.timings, self.node)
        self._linking = Linking(self._sessions, self._presence, self.timings)
        self._messaging = Messaging(self._sessions, self.timings)

    # --- engine-wide ------------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        return self._network.bus

    @property
    def double_connections(self) -> int:
        """Double connections detected by this engine (also the Prometheus counter)."""
        return self._presence.double_connections

    async def start(self) -> None:
        """Connect to the network: declare ``wa.sim``, open this node's queue, answer roll calls."""
        queue = await self._network.connect(self._presence.on_connection_lost, self._presence.on_reconnected)
        log.info("simulator engine on the network", node=self.node, queue=queue)

    async def close(self) -> None:
        """Stop every session (no events), then leave the network."""
        for session in self._sessions.all():
            await self._sessions.teardown(session.instance_id)
        await self._tasks.shutdown(timeout_s=5.0)
        await self._network.close()

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
            session = SimSession(instance_id, SessionStatus.QR)
            self._sessions.add(session)
            self._sessions.spawn(session, self._linking.link(session), "sim-link")
            return
        device_id = device.data.get("device_id")
        if device.data.get("engine", ENGINE) != ENGINE or not device_id:
            ENGINE_ERRORS.labels(ENGINE, "start").inc()
            raise EngineError("the device record is not a simulator device", status=409)
        session = SimSession(
            instance_id,
            SessionStatus.CONNECTING,
            jid=phone_jid(device.jid),
            device_id=str(device_id),
            push_name=device.data.get("push_name"),
            platform=device.data.get("platform"),
            contacts=[SimContact.model_validate(c) for c in device.data.get("contacts", [])],
        )
        self._sessions.add(session)
        self._sessions.spawn(session, self._linking.reconnect(session), "sim-reconnect")

    async def stop_session(self, instance_id: str) -> None:
        """Leave the network for this instance (no event; the device stays linked)."""
        await self._sessions.teardown(instance_id)

    async def logout(self, instance_id: str) -> None:
        """Unlink the device for good (the network remembers it), stop the session and emit
        ``LoggedOut(reason="logout")``. Raises :class:`SessionNotConnected` if no session runs."""
        session = self._sessions.get(instance_id)
        if session is None:
            raise SessionNotConnected(instance_id)
        await self._linking.unlink(session, "logout")

    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        return await self._messaging.send_text(instance_id, to_jid, text)

    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        return await self._messaging.send_media(instance_id, to_jid, media)

    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        """The phone's contact book (given at pairing) plus every chat seen by this session."""
        return contact_list(self._sessions.live(instance_id))

    async def check_number(self, instance_id: str, phone: str) -> str | None:
        """``<digits>@s.whatsapp.net`` unless the number starts with ``999`` (not on WhatsApp)."""
        self._sessions.live(instance_id)
        return phone_jid(phone) if is_on_whatsapp(phone) else None

    async def add_contact(self, instance_id: str, jid: str, name: str | None) -> DeviceRecord | None:
        """Save the contact in the phone's contact book (renaming it when ``name`` is given);
        returns the device record carrying the updated book (a resumed session keeps it)."""
        return save_contact(self._sessions.live(instance_id), jid, name)

    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """A pairing code for ``phone`` while the session shows QR codes (see
        :meth:`Linking.pair_phone`)."""
        return await self._linking.pair_phone(instance_id, phone)

    # --- deliveries -------------------------------------------------------------------------

    async def _dispatch(self, key: str, body: bytes, reply_to: str | None) -> None:
        """One delivery from the network, to the part that handles its kind of routing key."""
        kind = key.split(".", 1)[0]
        if kind == "qr":
            self._linking.on_scan(key, SimScan.from_bytes(body))
        elif kind == "code":
            self._linking.on_code(key, SimCodeEntry.from_bytes(body))
        elif kind == "presence":
            await self._presence.on_presence(key, SimPresence.from_bytes(body))
        elif kind == "msg":
            await self._messaging.on_message(key, SimMessage.from_bytes(body))
        elif kind == "rcpt":
            await self._messaging.on_receipt(key, SimReceipt.from_bytes(body))
        elif kind == "ctl":
            await self._linking.on_control(key, SimControl.from_bytes(body))
        elif kind == "rollcall":
            SimRollCall.from_bytes(body)
            await self._presence.answer_roll_call(reply_to)
