"""Engine events → the store → events on the bus; and the one way anything here records an event.

- :meth:`Recorder.on_engine_event` (the engine's callback) stores what an engine event changes
  and publishes the events it causes (broker confirm) before it returns.
- :meth:`Recorder.store_message` is the one path that stores a message with its
  ``message_received``/``message_sent`` event (row, events-feed entry, outbox entry in one step):
  messages the engine reports and messages sent through the API both go through it, so a send
  echoed by the engine is stored once.
- :meth:`Recorder.publish` stages any other event (outbox entry, and the feed entry) and
  publishes it; :meth:`Recorder.activity` adds an activity-log row.
- Every event kept for the events feed is written under the feed's clock
  (:class:`~wa_session_worker.service.feed_clock.FeedClock`): an instance's kept events get
  strictly increasing millisecond times in commit order.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from wa_common.batching import GroupCommit
from wa_common.bus import Bus
from wa_common.clock import Clock, from_unix, utcnow
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.schemas import Event
from wa_common.schemas.events import (
    ConnectedData,
    DisconnectedData,
    EventType,
    MessageReceivedData,
    MessageSentData,
    MessageStatusData,
    QrReceivedData,
)
from wa_common.schemas.status import MESSAGE_STATUS_RANK, InstanceStatus, MessageStatus
from wa_common.schemas.text import storable
from wa_session_worker import models
from wa_session_worker.engines.base import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    Message,
    Paired,
    QrCode,
    Receipt,
)
from wa_session_worker.metrics import ENGINE_EVENTS
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import ActivityRec, EventRec, MessageRec, OutboxRec
from wa_session_worker.service import guard, outbox, views
from wa_session_worker.service.feed_clock import FeedClock
from wa_session_worker.service.sessions import Running
from wa_session_worker.settings import WorkerSettings

log = get_logger(__name__)


MESSAGE_TYPE_MAX = guard.column_length(models.messages.c.message_type)
FILE_NAME_MAX = guard.column_length(models.messages.c.file_name)


def fit(value: str | None, limit: int | None) -> str | None:
    """Text from WhatsApp made storable in a column of ``limit`` characters (``None`` stays)."""
    return storable(value, limit) if value is not None else None


class Recorder:
    """Stores and publishes what happens to instances. ``running``: the sessions running here
    (events of a session stopped on purpose are not reported)."""

    def __init__(
        self,
        settings: WorkerSettings,
        repo: Repository,
        bus: Bus,
        running: Running,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.running = running
        self.clock = clock
        self.shard_count = settings.shard_count
        # Published events whose outbox entries are deleted in batches (``main`` runs it).
        self.published = outbox.Published(repo)
        self._owners: dict[str, str] = {}  # instance id -> user id (cache for event envelopes)
        self.feed = FeedClock(repo, clock, settings.shard_count)
        self._delivering: set[asyncio.Future[None]] = set()  # deliver_soon's tasks (kept referenced)
        self._events: GroupCommit[Event, bool] = GroupCommit(self._publish_window, name="worker.events")

    # --- what is cached per instance ----------------------------------------------------------

    def remember(self, instance_id: str, user_id: str) -> None:
        self._owners[instance_id] = user_id

    def forget(self, instance_id: str) -> None:
        """Drop what is cached about a deleted instance."""
        self._owners.pop(instance_id, None)
        self.feed.forget(instance_id)

    async def user_of(self, instance_id: str) -> str | None:
        user = self._owners.get(instance_id)
        if user is None:
            rec = await self.repo.get_instance(instance_id)
            if rec is not None:
                user = self._owners[instance_id] = rec.user_id
        return user

    def status_change(self, status: InstanceStatus) -> dict[str, Any]:
        """The instance fields of a move to ``status`` that ends any QR code (now active)."""
        return {
            "status": status.value,
            "qr_code": None,
            "qr_expires_at": None,
            "last_activity_at": self.clock(),
        }

    # --- engine events ------------------------------------------------------------------------

    async def on_engine_event(self, event: EngineEvent) -> None:
        """Store and publish one engine event; returns once both are durable."""
        ENGINE_EVENTS.labels(type(event).__name__).inc()
        user_id = await self.user_of(event.instance_id)
        if user_id is None:
            kind = type(event).__name__
            log.info("event for an unknown instance ignored", instance_id=event.instance_id, kind=kind)
            return
        if isinstance(event, QrCode):
            await self._on_qr(event, user_id)
        elif isinstance(event, Paired):
            await self._on_paired(event)
        elif isinstance(event, Connected):
            await self._on_connected(event, user_id)
        elif isinstance(event, Disconnected):
            await self._on_disconnected(event, user_id)
        elif isinstance(event, LoggedOut):
            await self._on_logged_out(event, user_id)
        elif isinstance(event, Message):
            await self._on_message(event, user_id)
        elif isinstance(event, Receipt):
            await self._on_receipt(event, user_id)

    async def _on_qr(self, event: QrCode, user_id: str) -> None:
        iid = event.instance_id
        if iid not in self.running:
            return
        now = self.clock()
        expires_at = now + timedelta(seconds=event.expires_in_s)
        await self.repo.update_instance(
            iid,
            status=InstanceStatus.QR.value,
            qr_code=event.code,
            qr_expires_at=expires_at,
            last_activity_at=now,
        )
        await self.activity(iid, "qr_received", {"attempt": event.attempt})
        data = QrReceivedData(instance_id=iid, qr_code=event.code).dump()
        # When the code stops working (meta: not part of the webhook payload; the gateway's
        # live stream shows it so the dashboard's countdown is exact; GET .../qr too).
        meta = {"expiresAt": views.iso(expires_at)}
        await self.publish(iid, user_id, EventType.QR_RECEIVED, data, meta=meta)

    async def _on_paired(self, event: Paired) -> None:
        await self.repo.update_instance(
            event.instance_id,
            device_jid=event.device.jid,
            device_data=dict(event.device.data),
            push_name=fit(event.push_name, guard.MAX_PUSH_NAME),
            last_activity_at=self.clock(),
        )
        details = {"jid": event.device.jid, "pushName": event.push_name, "platform": event.platform}
        await self.activity(event.instance_id, "paired", details)

    async def _on_connected(self, event: Connected, user_id: str) -> None:
        iid = event.instance_id
        if iid not in self.running:
            return
        fields = self.status_change(InstanceStatus.CONNECTED)
        if event.push_name is not None:
            fields["push_name"] = fit(event.push_name, guard.MAX_PUSH_NAME)
        await self.repo.update_instance(iid, **fields)
        self.running.connected(iid).set()  # wakes commands waiting for the session
        await self.activity(iid, "connected", {"jid": event.jid})
        await self.publish(iid, user_id, EventType.CONNECTED, ConnectedData(instance_id=iid).dump())

    async def _on_disconnected(self, event: Disconnected, user_id: str) -> None:
        iid = event.instance_id
        self.running.connected(iid).clear()
        if iid not in self.running:
            return  # a session we stopped on purpose (shard moved, shutdown)
        status = InstanceStatus.CONNECTING if event.will_reconnect else InstanceStatus.DISCONNECTED
        await self.repo.update_instance(iid, status=status.value, last_activity_at=self.clock())
        details = {"reason": event.reason, "willReconnect": event.will_reconnect}
        await self.activity(iid, "disconnected", details)
        data = DisconnectedData(
            instance_id=iid, reason=event.reason, will_reconnect=event.will_reconnect
        ).dump()
        await self.publish(iid, user_id, EventType.DISCONNECTED, data)

    async def _on_logged_out(self, event: LoggedOut, user_id: str) -> None:
        iid = event.instance_id
        self.running.connected(iid).clear()
        if not self.running.remove(iid):
            return
        fields = self.status_change(InstanceStatus.LOGGED_OUT)
        if event.reason != "qr_timeout":
            fields.update(device_jid=None, device_data=None, push_name=None)
        await self.repo.update_instance(iid, **fields)
        await self.activity(iid, "logged_out", {"reason": event.reason})
        data = DisconnectedData(instance_id=iid, reason=event.reason, will_reconnect=False).dump()
        await self.publish(iid, user_id, EventType.DISCONNECTED, data)

    async def _on_message(self, msg: Message, user_id: str) -> None:
        now = self.clock()
        media = msg.media
        # Text from WhatsApp is made storable (no NUL, no unpaired surrogate, within its column):
        # a message the store refused would be lost.
        text = storable(msg.text or (media.caption if media and media.caption else ""))
        push_name = fit(msg.push_name, guard.MAX_CONTACT_NAME)
        rec = MessageRec(
            id=new_id(),
            instance_id=msg.instance_id,
            message_id=msg.message_id,
            remote_jid=msg.chat_jid,
            from_me=msg.from_me,
            message_type=storable(msg.type, MESSAGE_TYPE_MAX),
            status=(MessageStatus.SENT if msg.from_me else MessageStatus.RECEIVED).value,
            timestamp=from_unix(msg.timestamp),
            created_at=now,
            updated_at=now,
            content=text,
            has_media=media is not None,
            caption=fit(media.caption, None) if media else None,
            mime_type=fit(media.mimetype, guard.MAX_MIMETYPE) if media else None,
            file_name=fit(media.filename, FILE_NAME_MAX) if media else None,
            media_size=media.size if media else None,
            metadata={"timestamp": msg.timestamp, "pushName": push_name, "sender": msg.sender_jid},
        )
        sender = msg.sender_jid if msg.is_group else msg.chat_jid
        event = await self.store_message(rec, user_id, timestamp=msg.timestamp, sender=sender)
        if event is not None:
            await self.deliver(event)

    async def _on_receipt(self, receipt: Receipt, user_id: str) -> None:
        try:
            rank = MESSAGE_STATUS_RANK.get(MessageStatus(receipt.status))
        except ValueError:
            return
        if rank is None:
            return
        lower = [s.value for s, r in MESSAGE_STATUS_RANK.items() if r < rank]
        changed = await self.repo.update_message_status(
            receipt.instance_id,
            list(receipt.message_ids),
            receipt.status,
            from_unix(receipt.timestamp),
            lower,
        )
        for rec in changed:
            data = MessageStatusData(
                instance_id=receipt.instance_id,
                message_id=rec.message_id,
                status=receipt.status,
                from_=receipt.chat_jid,
                from_me=rec.from_me,
            ).dump()
            await self.publish(receipt.instance_id, user_id, EventType.MESSAGE_STATUS, data)

    # --- recording ----------------------------------------------------------------------------

    async def store_message(
        self,
        rec: MessageRec,
        user_id: str,
        *,
        timestamp: int,
        sender: str | None = None,
        idempotency: tuple[str, dict[str, Any]] | None = None,
    ) -> Event | None:
        """Store ``rec`` with its event in one step (the message row, the events-feed entry, the
        outbox entry, the instance's last activity): ``message_sent`` for the account's own
        message, else ``message_received`` from ``sender`` (default: the chat; a group's member).
        ``timestamp``: WhatsApp's (Unix seconds). Returns the event to :meth:`deliver`, or
        ``None`` when the message is already stored (our own send echoed by the engine, a
        redelivered event): then nothing is written but the send's ``idempotency`` reply
        (``(key, reply)``: stored in the same step as the message)."""
        # The feed's data: the reference's fields, plus "from" (received) or "to" (sent) as the
        # webhook payloads carry them.
        recent: dict[str, Any] = {
            "instanceId": rec.instance_id,
            "messageId": rec.message_id,
            "remoteJid": rec.remote_jid,
            "fromMe": rec.from_me,
            "body": rec.content,
            "hasMedia": rec.has_media,
            "status": rec.status,
            "metadata": {k: rec.metadata[k] for k in ("pushName", "timestamp") if k in rec.metadata},
        }
        fields: dict[str, Any] = {
            "instance_id": rec.instance_id,
            "message_id": rec.message_id,
            "body": rec.content,
            "type": rec.message_type,
            "timestamp": timestamp,
            "has_media": rec.has_media,
        }
        if rec.from_me:
            recent["to"] = rec.remote_jid
            type_ = EventType.MESSAGE_SENT
            data = MessageSentData(to=rec.remote_jid, **fields).dump()
        else:
            recent["from"] = sender if sender is not None else rec.remote_jid
            type_ = EventType.MESSAGE_RECEIVED
            push_name = rec.metadata.get("pushName")
            data = MessageReceivedData(from_=recent["from"], push_name=push_name, **fields).dump()
        meta = {"hasMedia": rec.has_media, "mediaSize": rec.media_size or 0, "mimeType": rec.mime_type}

        async def write(at: datetime) -> Event | None:
            event = Event(
                type=type_, instance_id=rec.instance_id, user_id=user_id, data=data, meta=meta, occurred_at=at
            )
            kept = EventRec(event.id, rec.instance_id, type_, at, recent)
            if await self.repo.record_message(rec, kept, self._pending(event), idempotency=idempotency):
                return event
            if idempotency is not None:
                await self.repo.idempotency_finish(rec.instance_id, *idempotency)
            return None

        return await self.feed.stamped(rec.instance_id, write)

    def _pending(self, event: Event) -> OutboxRec:
        return outbox.pending(event, self.shard_count, clock=self.clock)

    async def deliver(self, event: Event) -> None:
        """Publish a staged event (an unconfirmed one is published by the outbox relay). Events
        delivered together (every session of this worker) share broker messages
        (:meth:`~wa_common.bus.Bus.publish_events`)."""
        await self._events.submit(event)

    async def _publish_window(self, events: list[Event]) -> list[bool]:
        return await outbox.deliver_all(self.bus, events, self.published)

    def deliver_soon(self, event: Event) -> None:
        """:meth:`deliver` in the background (a reply need not wait for the broker: the event is
        committed to the outbox, which the relay publishes if this one is lost)."""
        task = asyncio.ensure_future(self.deliver(event))
        self._delivering.add(task)
        task.add_done_callback(self._delivering.discard)

    async def publish(
        self,
        instance_id: str,
        user_id: str | None,
        type_: str,
        data: dict[str, Any],
        *,
        meta: dict[str, Any] | None = None,
        recent: dict[str, Any] | None = None,
        keep_recent: bool = True,
    ) -> None:
        """Stage the event (outbox entry, and the events-feed entry unless ``keep_recent`` is
        false, in one step), then publish it."""

        def build(at: datetime) -> Event:
            return Event(
                type=type_,
                instance_id=instance_id,
                user_id=user_id,
                data=data,
                meta=meta or {},
                occurred_at=at,
            )

        if not keep_recent:
            event = build(self.clock())
            await self.repo.stage_event(None, self._pending(event))
        else:

            async def write(at: datetime) -> Event:
                event = build(at)
                kept = EventRec(event.id, instance_id, type_, at, recent if recent is not None else data)
                await self.repo.stage_event(kept, self._pending(event))
                return event

            event = await self.feed.stamped(instance_id, write)
        await self.deliver(event)

    async def activity(self, instance_id: str, action: str, details: dict[str, Any] | None = None) -> None:
        await self.repo.add_activity(ActivityRec(new_id(), instance_id, action, details or {}, self.clock()))
