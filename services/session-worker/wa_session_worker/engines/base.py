"""The ``Engine`` interface between the session worker and a WhatsApp implementation.

An engine runs WhatsApp sessions (one per instance) and reports what happens through one async
callback with the normalised events below. It keeps no durable state of its own: what a session
needs to resume on another worker (its *device record*) is handed to the worker in
:class:`Paired` and given back to :meth:`Engine.start_session`. For ``neonize`` the device record
names the device in the shared device store (the keys live in that store); for the simulator it
carries the simulated device's identity.

Times are Unix seconds (UTC) unless a name says otherwise. JIDs are ``<digits>@s.whatsapp.net``
for people and ``<id>@g.us`` for groups.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wa_common.logs import exception_fields, get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.metrics import ENGINE_ERRORS

log = get_logger(__name__)


class SessionStatus(StrEnum):
    """Connection state as the reference's ``status`` field reports it."""

    CONNECTING = "connecting"
    QR = "qr"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"


class EngineError(RuntimeError):
    """An engine operation failed; ``status`` is the HTTP status the API should answer with
    (e.g. 409 when the session is not connected, 400 for a number not on WhatsApp, 502 when
    WhatsApp refused)."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class SessionNotConnected(EngineError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"instance {instance_id} is not connected to WhatsApp", status=409)


@dataclass(frozen=True)
class DeviceRecord:
    """What a session needs to reconnect without a new QR scan (stored by the worker)."""

    jid: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaInfo:
    mimetype: str
    size: int = 0  # bytes
    filename: str | None = None
    caption: str | None = None
    data: bytes | None = None  # the content when the engine has it (inbound media)


@dataclass(frozen=True)
class OutgoingMedia:
    data: bytes
    mimetype: str
    filename: str | None = None
    caption: str | None = None


@dataclass(frozen=True)
class SendResult:
    message_id: str
    timestamp: int  # Unix seconds


@dataclass(frozen=True)
class WaContact:
    jid: str
    name: str | None = None
    push_name: str | None = None
    is_group: bool = False


# --- Events (engine → worker) -----------------------------------------------------------------


@dataclass(frozen=True)
class QrCode:
    instance_id: str
    code: str  # the raw pairing string WhatsApp issues, to be rendered as a QR image
    attempt: int  # 1 for the first code of a linking attempt
    expires_in_s: float


@dataclass(frozen=True)
class Paired:
    instance_id: str
    device: DeviceRecord
    push_name: str | None = None
    platform: str | None = None


@dataclass(frozen=True)
class Connected:
    instance_id: str
    jid: str
    push_name: str | None = None  # the account's own push name, when the engine knows it


@dataclass(frozen=True)
class Disconnected:
    instance_id: str
    reason: str
    will_reconnect: bool


@dataclass(frozen=True)
class LoggedOut:
    """The device was unlinked (from the phone, by logout, or after a QR timeout with no pairing:
    then ``reason`` is ``qr_timeout`` and the device record, if any, is kept)."""

    instance_id: str
    reason: str


@dataclass(frozen=True)
class Message:
    """A message seen by the session: inbound (``from_me`` false) or sent from this account
    (possibly by another linked device)."""

    instance_id: str
    message_id: str
    chat_jid: str
    sender_jid: str
    from_me: bool
    timestamp: int  # Unix seconds
    type: str  # conversation, image, video, audio, document, sticker...
    text: str = ""
    push_name: str | None = None
    is_group: bool = False
    media: MediaInfo | None = None


@dataclass(frozen=True)
class Receipt:
    instance_id: str
    chat_jid: str
    message_ids: tuple[str, ...]
    status: str  # delivered | read | played
    timestamp: int  # Unix seconds


EngineEvent = QrCode | Paired | Connected | Disconnected | LoggedOut | Message | Receipt
EventCallback = Callable[[EngineEvent], Awaitable[None]]


class Engine(ABC):
    """A WhatsApp implementation. All methods are safe to call concurrently for different
    instances; the worker serialises calls for one instance."""

    name: str

    def __init__(self, on_event: EventCallback) -> None:
        self.on_event = on_event

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Engine-wide start (connect to the simulated network, load libraries...)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop every session and release engine-wide resources."""

    @abstractmethod
    async def start_session(self, instance_id: str, device: DeviceRecord | None) -> None:
        """Start a session: with ``device`` reconnect it; without, begin linking (QR events)."""

    @abstractmethod
    async def stop_session(self, instance_id: str) -> None:
        """Disconnect and forget the session in this process (the device stays linked)."""

    @abstractmethod
    async def logout(self, instance_id: str) -> None:
        """Unlink the device from the account and stop the session."""

    @abstractmethod
    def status(self, instance_id: str) -> SessionStatus:
        """Current status of the session in this process (``DISCONNECTED`` if unknown)."""

    @abstractmethod
    async def send_text(self, instance_id: str, to_jid: str, text: str) -> SendResult:
        """Raises :class:`SessionNotConnected` or :class:`EngineError`."""

    @abstractmethod
    async def send_media(self, instance_id: str, to_jid: str, media: OutgoingMedia) -> SendResult:
        """Raises :class:`SessionNotConnected` or :class:`EngineError`."""

    @abstractmethod
    async def fetch_contacts(self, instance_id: str) -> list[WaContact]:
        """The account's contacts and groups from WhatsApp."""

    @abstractmethod
    async def check_number(self, instance_id: str, phone: str) -> str | None:
        """The JID of ``phone`` (digits) if it is on WhatsApp, else ``None``."""

    async def add_contact(self, instance_id: str, jid: str, name: str | None) -> DeviceRecord | None:
        """Save ``jid`` (with ``name``, if given) in the account's contact book as this engine
        keeps it, so that :meth:`fetch_contacts` shows it by that name. Returns the updated
        device record when the contact book lives in it (the worker stores it, so a session
        resumed elsewhere keeps the contact), else ``None``. Default: the engine keeps no contact
        book of its own (``None``). Raises :class:`SessionNotConnected` or :class:`EngineError`."""
        return None

    @abstractmethod
    async def pair_phone(self, instance_id: str, phone: str) -> str:
        """Request a pairing code (``XXXX-XXXX``) for linking by phone number instead of QR."""


# --- Helpers shared by the engines ------------------------------------------------------------


async def emit_event(
    on_event: EventCallback, event: EngineEvent, *, engine: str, timeout_s: float | None = None
) -> None:
    """Hand ``event`` to the worker's callback (bounded by ``timeout_s`` when given). A failure is
    counted (``wa_engine_errors_total{operation="callback"}``) and logged, never raised."""
    try:
        if timeout_s is None:
            await on_event(event)
        else:
            await asyncio.wait_for(on_event(event), timeout_s)
    except Exception as exc:
        ENGINE_ERRORS.labels(engine, "callback").inc()
        # No exception message: a store error quotes the value it refused (message text,
        # device keys).
        log.error("engine event callback failed", kind=type(event).__name__, **exception_fields(exc))


def spawn_session_task(
    tasks: TaskSupervisor,
    session_tasks: list[asyncio.Task[Any]],
    coro: Coroutine[Any, Any, Any],
    name: str,
) -> None:
    """Run ``coro`` under the engine's ``tasks``, listed in ``session_tasks`` while it runs (so
    ending the session cancels it: :func:`cancel_session_tasks`)."""
    task = tasks.spawn(coro, name=name)
    session_tasks.append(task)
    task.add_done_callback(lambda t: session_tasks.remove(t) if t in session_tasks else None)


def cancel_session_tasks(session_tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel a session's tasks, except the calling one (which is ending the session)."""
    current = asyncio.current_task()
    for task in list(session_tasks):
        if task is not current:
            task.cancel()
