"""A small client of the simulated WhatsApp network (``wa.sim``) for the CLI, the gateway's
simulator-only admin route and tests. Shapes: :mod:`wa_common.schemas.sim`.

Every function takes a connected :class:`~wa_common.bus.Bus` and raises
:class:`~wa_common.schemas.sim.SimError` when the network has nobody to take the request (an
unknown or expired QR code or pairing code, a message to a number with no live session), and
:class:`~wa_common.bus.PublishError` when the broker itself fails.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time

from aio_pika.exceptions import DeliveryError

from wa_common.bus import EXCHANGE_SIM, Bus, Consumer, Delivery, PublishError
from wa_common.schemas.sim import (
    SimCodeEntry,
    SimContact,
    SimControl,
    SimDoubleConnection,
    SimError,
    SimMedia,
    SimMessage,
    SimRollCall,
    SimRollCallAnswer,
    SimScan,
    code_token,
    default_contact_book,
    jid_user,
    normalise_phone,
    phone_jid,
    qr_token,
)

__all__ = [
    "DoubleConnectionWatch",
    "media_type",
    "new_message_id",
    "sim_enter_code",
    "sim_roll_call",
    "sim_scan",
    "sim_send",
    "sim_unlink",
    "unroutable",
    "watch_double_connections",
]


def unroutable(exc: PublishError) -> bool:
    """True if the broker returned the message because no queue was bound for its key."""
    cause = exc.__cause__
    return isinstance(cause, DeliveryError) and cause.message is not None


def new_message_id() -> str:
    """A WhatsApp-style message id (``3EB0`` + 18 upper-case hex digits, like whatsmeow's)."""
    return "3EB0" + secrets.token_hex(9).upper()


def media_type(mimetype: str) -> str:
    """WhatsApp message type of a mimetype: image, sticker (webp), video, audio or document."""
    if mimetype == "image/webp":
        return "sticker"
    for prefix in ("image", "video", "audio"):
        if mimetype.startswith(prefix + "/"):
            return prefix
    return "document"


async def sim_scan(
    bus: Bus,
    qr_code: str,
    phone: str,
    *,
    push_name: str | None = None,
    contacts: list[SimContact] | None = None,
) -> None:
    """Phone ``phone`` scans ``qr_code`` (the string of a ``qr`` event). The session showing it
    pairs as ``<phone>@s.whatsapp.net``. Raises :class:`SimError` if no session shows that code
    (wrong string, or it rotated/expired)."""
    digits = normalise_phone(phone)
    scan = SimScan(
        qr_code=qr_code.strip(),
        phone=digits,
        push_name=push_name,
        contacts=contacts if contacts is not None else default_contact_book(digits),
    )
    try:
        await bus.publish(EXCHANGE_SIM, f"qr.{qr_token(qr_code)}", scan.to_bytes(), persistent=False)
    except PublishError as exc:
        if unroutable(exc):
            raise SimError("no session shows this QR code (wrong, rotated or expired)") from exc
        raise


async def sim_enter_code(
    bus: Bus,
    code: str,
    phone: str,
    *,
    push_name: str | None = None,
    contacts: list[SimContact] | None = None,
) -> None:
    """Phone ``phone`` enters the pairing code ``code`` (``XXXX-XXXX``). The session that requested
    it pairs if it asked for this very phone number (else it ignores the entry, like WhatsApp).
    Raises :class:`SimError` if no session has that code."""
    digits = normalise_phone(phone)
    entry = SimCodeEntry(
        code=code.strip().upper(),
        phone=digits,
        push_name=push_name,
        contacts=contacts if contacts is not None else default_contact_book(digits),
    )
    try:
        await bus.publish(EXCHANGE_SIM, f"code.{code_token(code)}", entry.to_bytes(), persistent=False)
    except PublishError as exc:
        if unroutable(exc):
            raise SimError("no session is waiting for this pairing code") from exc
        raise


async def sim_send(
    bus: Bus,
    from_phone: str,
    to_jid: str,
    *,
    text: str = "",
    media: bytes | None = None,
    mimetype: str = "application/octet-stream",
    filename: str | None = None,
    push_name: str | None = None,
) -> str:
    """Phone ``from_phone`` sends ``text`` (or ``media`` bytes with ``text`` as caption) to
    ``to_jid``; returns the message id. Linked sessions of ``from_phone`` see it as ``from_me``.
    Raises :class:`SimError` if neither ``to_jid`` nor ``from_phone`` has a live session (nobody
    would see the message)."""
    sender = phone_jid(from_phone)
    recipient = phone_jid(to_jid)
    sim_media = None
    if media is not None:
        sim_media = SimMedia(
            mimetype=mimetype,
            data_b64=base64.b64encode(media).decode(),
            filename=filename,
            caption=text or None,
        )
    message = SimMessage(
        id=new_message_id(),
        from_jid=sender,
        to_jid=recipient,
        timestamp=int(time.time()),
        type=media_type(mimetype) if media is not None else "conversation",
        text=text,
        push_name=push_name or f"Sim {normalise_phone(from_phone)}",
        media=sim_media,
    )
    body = message.to_bytes()
    reached = False
    # The recipient, then the sender's own linked devices (if it is one of our instances: they see
    # the message as from_me).
    for user in (jid_user(recipient), jid_user(sender)):
        try:
            await bus.publish(EXCHANGE_SIM, f"msg.{user}", body, persistent=False)
            reached = True
        except PublishError as exc:
            if not unroutable(exc):
                raise
    if not reached:
        raise SimError(f"neither {recipient} nor {sender} has a live session on the simulated network")
    return message.id


async def sim_unlink(bus: Bus, phone: str, device_id: str | None = None) -> None:
    """The phone ``phone`` removes a linked device (``None``: all of them): its live session gets
    ``LoggedOut(reason="device_removed")`` and the device can never reconnect."""
    control = SimControl(jid=phone_jid(phone), device_id=device_id)
    await bus.publish(
        EXCHANGE_SIM, f"ctl.{normalise_phone(phone)}", control.to_bytes(), persistent=False, mandatory=False
    )


async def sim_roll_call(bus: Bus, wait_s: float = 1.0) -> list[SimRollCallAnswer]:
    """Ask every simulator engine on the network for its sessions; collects answers for
    ``wait_s`` seconds."""
    answers: list[SimRollCallAnswer] = []

    async def on_answer(delivery: Delivery) -> None:
        answers.append(SimRollCallAnswer.from_bytes(delivery.body))

    consumer = await bus.consume_transient([], on_answer, name_prefix="wa.sim.rollcall")
    try:
        await bus.publish(
            EXCHANGE_SIM,
            "rollcall",
            SimRollCall().to_bytes(),
            reply_to=consumer.queue_name,
            persistent=False,
            mandatory=False,
        )
        await asyncio.sleep(wait_s)
    finally:
        await consumer.cancel(timeout_s=1.0)
    return answers


class DoubleConnectionWatch:
    """Counts ``alert.double_connection`` notices seen on the network since :meth:`start`."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.alerts: list[SimDoubleConnection] = []
        self._consumer: Consumer | None = None

    @property
    def count(self) -> int:
        return len(self.alerts)

    async def start(self) -> DoubleConnectionWatch:
        async def on_alert(delivery: Delivery) -> None:
            self.alerts.append(SimDoubleConnection.from_bytes(delivery.body))

        self._consumer = await self._bus.consume_transient(
            [(EXCHANGE_SIM, "alert.double_connection")], on_alert, name_prefix="wa.sim.watch"
        )
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.cancel(timeout_s=1.0)
            self._consumer = None


async def watch_double_connections(bus: Bus) -> DoubleConnectionWatch:
    """Start counting double connections anywhere on the simulated network (for tests)."""
    return await DoubleConnectionWatch(bus).start()
