"""Sending text and media; a send runs once per idempotency key.

A send is four steps, each one call of :class:`Messaging`:

1. :meth:`~Messaging.claim` (one store write): ``idempotency_begin`` marks the key pending. A
   command seen before answers the first run's reply (outcome ``duplicate``), or 409 when that
   run was interrupted after it may have sent (the outcome is unknown: it is not sent again).
2. :meth:`~Messaging.prepare` (no store write): the recipient parsed, the session awaited, the
   media decoded or downloaded: an :class:`Outgoing`.
3. :meth:`~Messaging.transmit`: the engine sends it.
4. :meth:`~Messaging.record` (the store writes after the send, in one step): the message row
   with its ``message_sent`` event (feed and outbox entries, through
   :meth:`~wa_session_worker.service.recorder.Recorder.store_message`) and the key's reply. It
   returns the event, which is published after the commit without the reply waiting for the
   broker (the outbox relay publishes it if this worker dies first).

Steps 2-3 and the start of 4 run in the instance's turn (:mod:`~.turns`): an instance's sends
reach the engine and the store in acceptance order, while claims and commits of many sends
share transactions (the SQL store's group commit).

A failure of ``prepare``, or the engine's own :class:`EngineError` (nothing was sent), forgets
the key (:meth:`~Messaging.release`), so a retry may run; any other failure after the engine was
called leaves it pending.

Group commit (issue 15) changes none of the steps, only what runs them: the SQL store commits
the writes of every send, receipt and received message that arrive together in one transaction
(:mod:`~wa_session_worker.repository.sql`), so a window of sends costs one claim commit and one
record commit whatever its size; the published events of a window share broker messages
(:meth:`~wa_session_worker.service.recorder.Recorder.deliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from wa_common.bus.router import RequestError
from wa_common.clock import from_unix
from wa_common.ids import id_timestamp_ms, new_id
from wa_common.schemas import Command, Event, Reply
from wa_common.schemas.messages import MessageId
from wa_common.schemas.session import SendMedia, SendText
from wa_common.schemas.status import MessageStatus
from wa_session_worker import media as media_mod
from wa_session_worker.engines.base import EngineError, OutgoingMedia, SendResult
from wa_session_worker.metrics import COMMANDS, SEND_PHASE_SECONDS
from wa_session_worker.repository.records import InstanceRec, MessageRec
from wa_session_worker.service import views
from wa_session_worker.service.access import instance_for, require_caller
from wa_session_worker.service.sessions import SessionCommands
from wa_session_worker.service.turns import CURRENT_TURN

INTERRUPTED = (
    "an earlier attempt of this send was interrupted (worker failover); its outcome is "
    "unknown, so it is not sent again: check the chat history before retrying with a new key"
)


TOO_LATE = (
    "not sent: the request waited in the queue until too close to its deadline (the system is "
    "overloaded); it may be sent again with the same Idempotency-Key"
)


@dataclass(frozen=True)
class Outgoing:
    """A send ready for the engine: the recipient, the message type (``text``, ``image``...),
    the text or caption (``""`` without), and the media with the URL it came from."""

    jid: str
    kind: str
    body: str
    media: OutgoingMedia | None = None
    media_url: str | None = None


class _Phases:
    """Observes each phase of one send into ``wa_worker_send_phase_seconds`` (the first one,
    ``queued``, from the request id's ULID time: when the gateway made the request)."""

    def __init__(self, request_id: str) -> None:
        self._at = time.time()
        with contextlib.suppress(ValueError):  # not a ULID (a test's id)
            SEND_PHASE_SECONDS.labels("queued").observe(
                max(0.0, self._at - id_timestamp_ms(request_id) / 1000)
            )

    def __call__(self, name: str) -> None:
        now = time.time()
        SEND_PHASE_SECONDS.labels(name).observe(now - self._at)
        self._at = now


INSTANCE_MEMORY_S = 5.0
"""How long a send reuses the instance record it read (s). A send needs only the record's id and
owner, which never change; the memory is kept only for sessions running here and for this long,
so a deletion by another worker is noticed within it."""


class Messaging(SessionCommands):
    """Sends (module docstring: the four steps)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._instances: dict[str, tuple[float, InstanceRec]] = {}  # id -> (until, record)

    async def _instance(self, cmd: Command) -> InstanceRec:
        """:func:`instance_for`, from memory for an instance whose session runs here and that
        was read less than :data:`INSTANCE_MEMORY_S` ago (one SELECT less per send)."""
        memory = self._instances
        iid = cmd.instance_id
        hit = memory.get(iid) if iid else None
        if hit is not None and hit[0] > time.monotonic() and iid in self.running:
            caller = require_caller(cmd.caller)
            if caller.is_admin or hit[1].user_id == caller.user_id:
                return hit[1]
            raise RequestError(404, "Instance not found")
        rec = await instance_for(self.repo, cmd.caller, iid)
        if rec.id in self.running:
            if len(memory) > 2 * max(len(self.running), 64):  # sessions stopped meanwhile
                for stale in [i for i in memory if i not in self.running]:
                    del memory[stale]
            memory[rec.id] = (time.monotonic() + INSTANCE_MEMORY_S, rec)
        return rec

    async def send(self, cmd: Command, body: SendText | SendMedia) -> MessageId | Reply:
        """The four steps of the module docstring for one ``send_text`` or ``send_media``: the
        message's id, or the first run's reply to a repeated command."""
        phase = _Phases(cmd.id)
        rec = await self._instance(cmd)
        phase("lookup")
        key = cmd.idempotency_key or f"request:{cmd.id}"
        previous = await self.claim(rec, key, cmd.name)
        phase("claim")
        if previous is not None:
            return previous
        # The instance's turn (service/turns.py) orders the engine send and the submission of the
        # record; the claim before it and the commit after it overlap with the neighbours'.
        async with CURRENT_TURN.get() or contextlib.nullcontext():
            phase("turn")
            try:
                out = await self.prepare(rec, cmd, body)
                phase("prepare")
            except Exception:
                await self.release(rec, key)
                raise
            if cmd.remaining_s() < self.settings.send_min_remaining_s:
                # Queued too long (overload): its caller gives up before a reply could reach it.
                await self.release(rec, key)
                COMMANDS.labels(cmd.name, "too_late").inc()
                raise RequestError(504, TOO_LATE)
            try:
                result = await self.transmit(rec, out)
                phase("transmit")
            except EngineError:
                await self.release(rec, key)
                raise
            answer = views.message_id(result.message_id)
            # Started inside the turn: it reaches the store's queue before the next send's.
            recording = asyncio.ensure_future(self.record(rec, out, result, key, answer))
        event = await recording
        phase("record")
        if event is not None:
            self.recorder.deliver_soon(event)
        return answer

    async def claim(self, rec: InstanceRec, key: str, name: str) -> Reply | None:
        """Mark ``key`` pending; the first run's reply when it is a repeat (409: interrupted)."""
        previous = await self.repo.idempotency_begin(rec.id, key, name, at=self.clock())
        if previous is None:
            return None
        COMMANDS.labels(name, "duplicate").inc()
        if previous.state == "done" and previous.reply is not None:
            return Reply.model_validate(previous.reply)
        raise RequestError(409, INTERRUPTED)

    async def release(self, rec: InstanceRec, key: str) -> None:
        """Forget ``key``: nothing was sent, so a retry may run."""
        await self.repo.idempotency_finish(rec.id, key, None)

    async def prepare(self, rec: InstanceRec, cmd: Command, body: SendText | SendMedia) -> Outgoing:
        """Everything a send needs before the engine is called (writes nothing)."""
        jid = views.to_jid(body.phone)
        if isinstance(body, SendText):
            await self.sessions.await_connected(rec.id, cmd)
            return Outgoing(jid, "text", body.message)
        if (body.url is None) == (body.data_base64 is None):
            raise RequestError(400, "exactly one of url and dataBase64 is required")
        await self.sessions.await_connected(rec.id, cmd)
        s = self.settings
        if body.data_base64 is not None:
            media = media_mod.decode_upload(body.data_base64, body.mimetype, body.filename, s.media_max_bytes)
        else:
            assert body.url is not None
            media = await media_mod.download(
                body.url,
                max_bytes=s.media_max_bytes,
                timeout_s=min(s.media_timeout_s, max(cmd.remaining_s() - 1.0, 1.0)),
                allow_private=s.media_private_allowed,
                mimetype=body.mimetype,
                filename=body.filename,
            )
        out = OutgoingMedia(media.data, media.mimetype, media.filename, body.caption)
        kind = media_mod.message_type_for(media.mimetype)
        return Outgoing(jid, kind, body.caption or "", media=out, media_url=body.url)

    async def transmit(self, rec: InstanceRec, out: Outgoing) -> SendResult:
        if out.media is None:
            return await self.engine.send_text(rec.id, out.jid, out.body)
        return await self.engine.send_media(rec.id, out.jid, out.media)

    async def record(
        self, rec: InstanceRec, out: Outgoing, result: SendResult, key: str, answer: MessageId
    ) -> Event | None:
        """A sent message's store writes: the message with its ``message_sent`` event (``None``
        when the engine already reported it), and the reply ``answer`` as ``key``'s (what
        :meth:`claim` answers a repeat with)."""
        now = self.clock()
        media = out.media
        msg = MessageRec(
            id=new_id(),
            instance_id=rec.id,
            message_id=result.message_id,
            remote_jid=out.jid,
            from_me=True,
            message_type=out.kind,
            status=MessageStatus.SENT.value,
            timestamp=from_unix(result.timestamp),
            created_at=now,
            updated_at=now,
            content=out.body,
            has_media=media is not None,
            media_url=out.media_url,
            caption=media.caption if media else None,
            mime_type=media.mimetype if media else None,
            file_name=media.filename if media else None,
            media_size=len(media.data) if media else None,
            metadata={"timestamp": result.timestamp},
            status_updated_at=now,
        )
        reply = Reply.success(answer).model_dump(mode="json")
        return await self.recorder.store_message(
            msg, rec.user_id, timestamp=result.timestamp, idempotency=(key, reply)
        )
