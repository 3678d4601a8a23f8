"""Messages and receipts on the simulated network, translated to and from engine events.

Messages are sent to ``msg.<user>`` (mandatory). If no live session holds the recipient, it is an
external contact: ``Receipt(delivered)`` after ``delivered_ms`` and ``Receipt(read)`` ``read_ms``
later. A receiving session emits ``Message`` and answers with the same receipts over the network.
Like whatsmeow, a session gets no ``Message`` for what it sent itself, but does for what its
account sent from another device (``from_me``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncGenerator

from wa_common.bus import PublishError
from wa_common.schemas.sim import GROUP_SERVER, SimMedia, SimMessage, SimReceipt, jid_user, phone_jid
from wa_common.sim_client import media_type, new_message_id, unroutable
from wa_session_worker.engines.base import (
    EngineError,
    MediaInfo,
    Message,
    OutgoingMedia,
    Receipt,
    SendResult,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS, SIM_EXTERNAL_MESSAGES
from wa_session_worker.engines.simulator.registry import SimSessions
from wa_session_worker.engines.simulator.session import ENGINE, SimSession, SimTimings, on_whatsapp


class Messaging:
    def __init__(self, sessions: SimSessions, timings: SimTimings) -> None:
        self.sessions = sessions
        self.network = sessions.network
        self.timings = timings

    # --- sending ------------------------------------------------------------------------------

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

    async def _send(
        self, instance_id: str, to_jid: str, *, text: str, media: SimMedia | None, operation: str
    ) -> SendResult:
        session = self.sessions.live(instance_id)
        if to_jid.endswith("@" + GROUP_SERVER):
            raise EngineError("the simulator has no groups", status=400)
        recipient = on_whatsapp(to_jid, phone_jid)
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
        key = f"msg.{jid_user(recipient)}"
        external = self.network.known_unroutable(key)
        if not external:
            try:
                await self.network.publish(key, body, mandatory=True)
            except PublishError as exc:
                if not unroutable(exc):
                    ENGINE_ERRORS.labels(ENGINE, operation).inc()
                    raise EngineError(f"the simulated network refused the message: {exc}") from exc
                self.network.remember_unroutable(key)
                external = True
        if external:
            SIM_EXTERNAL_MESSAGES.inc()
            self.sessions.tasks.spawn(self._external_receipts(session, message), name="sim-external-receipts")
        # Other linked devices of this account see the message as from_me. Not awaited: the
        # echo is best effort (not persistent, not mandatory), and the send's reply need not wait
        # for its confirm (tasks start in order, so echoes keep the sends' order).
        self.sessions.tasks.spawn(
            self.network.publish(f"msg.{session.user}", body, mandatory=False), name="sim-echo"
        )
        return SendResult(message.id, message.timestamp)

    async def _external_receipts(self, session: SimSession, message: SimMessage) -> None:
        """An external contact: delivered after ``delivered_ms``, read ``read_ms`` later."""
        async with contextlib.aclosing(self._phone_receipts()) as statuses:
            async for status in statuses:
                if self.sessions.get(session.instance_id) is not session:
                    return
                await self.sessions.emit(
                    Receipt(session.instance_id, message.to_jid, (message.id,), status, int(time.time()))
                )

    async def _phone_receipts(self) -> AsyncGenerator[str, None]:
        """A phone's receipts for one message, each when it is due: ``delivered`` after
        ``delivered_ms``, ``read`` ``read_ms`` later."""
        await asyncio.sleep(self.timings.delivered_ms / 1000)
        for status, delay_ms in (("delivered", 0), ("read", self.timings.read_ms)):
            await asyncio.sleep(delay_ms / 1000)
            yield status

    # --- receiving ----------------------------------------------------------------------------

    async def on_message(self, key: str, message: SimMessage) -> None:
        """A message to the account of ``key``: ``Message`` on each of its live sessions here
        (receipts answered once)."""
        receipts_sent = False
        for session in self.sessions.targets(key):
            if not session.live or session.jid is None:
                continue
            from_me = message.from_jid == session.jid
            if from_me and message.sender_device == session.device_id:
                continue  # our own send: whatsmeow does not echo it
            chat = message.to_jid if from_me else message.from_jid
            if not from_me:
                session.chats[chat] = message.push_name
            await self.sessions.emit(_message_event(session.instance_id, message, chat, from_me))
            if not from_me and not receipts_sent:
                receipts_sent = True
                self.sessions.tasks.spawn(self._answer_receipts(message, session.jid), name="sim-receipts")

    async def on_receipt(self, key: str, receipt: SimReceipt) -> None:
        """Receipts for messages the account of ``key`` sent."""
        for session in self.sessions.targets(key):
            if session.live:
                await self.sessions.emit(
                    Receipt(
                        session.instance_id,
                        receipt.by_jid,
                        tuple(receipt.message_ids),
                        receipt.status,
                        receipt.timestamp,
                    )
                )

    async def _answer_receipts(self, message: SimMessage, reader_jid: str) -> None:
        """The receiving session's receipts for ``message``, back to its sender over the network."""
        async with contextlib.aclosing(self._phone_receipts()) as statuses:
            async for status in statuses:
                receipt = SimReceipt(
                    by_jid=reader_jid,
                    to_jid=message.from_jid,
                    message_ids=[message.id],
                    status=status,
                    timestamp=int(time.time()),
                )
                await self.network.publish(
                    f"rcpt.{jid_user(message.from_jid)}", receipt.to_bytes(), mandatory=False
                )


def _message_event(instance_id: str, message: SimMessage, chat: str, from_me: bool) -> Message:
    """The ``Message`` event of a simulated message seen by a session of ``instance_id``."""
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
    return Message(
        instance_id=instance_id,
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
