"""The session worker's logic: sessions of owned shards, engine events, commands and queries.

- Sessions: :class:`WorkerService` is the :class:`~wa_session_worker.shards.manager.ShardOwner`.
  When a shard is acquired it starts the sessions of that shard's instances (from their stored
  device records: no new QR scan), then consumes ``wa.shard.<k>``; when a shard is given up or
  lost it stops consuming, then stops the sessions (the lease is released only after that).
- Engine events (:meth:`WorkerService.on_engine_event`) are stored and published (broker
  confirm) before the callback returns.
- Commands (:meth:`handle_command`) run one at a time per instance; queries
  (:meth:`handle_query`) read the store. Both return a :class:`Reply` whose ``data`` is the
  reference's response body and whose ``status`` is the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from wa_common.bus import EXCHANGE_COMMANDS, Bus, Consumer, shard_for, shard_queue
from wa_common.bus.client import Handler
from wa_common.db import redact_url
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.schemas import Caller, Command, Event, Query, Reply
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.events import (
    EVENT_NAME_ALIASES,
    ConnectedData,
    DisconnectedData,
    EventType,
    InstanceDeletedData,
    InstanceSnapshot,
    MessageReceivedData,
    MessageSentData,
    MessageStatusData,
    QrReceivedData,
    WebhookSettings,
    WebhookUpdatedData,
)
from wa_common.schemas.session import (
    ActivityQuery,
    AddContact,
    ChatMessagesQuery,
    ContactsQuery,
    CreateInstance,
    EventsQuery,
    ListInstances,
    PairPhone,
    SaveContact,
    SendMedia,
    SendText,
    SessionCommand,
    SessionQuery,
    UpdateInstance,
)
from wa_common.schemas.text import storable
from wa_session_worker import media as media_mod
from wa_session_worker import models
from wa_session_worker.engines.base import (
    Connected,
    DeviceRecord,
    Disconnected,
    Engine,
    EngineError,
    EngineEvent,
    LoggedOut,
    Message,
    OutgoingMedia,
    Paired,
    QrCode,
    Receipt,
    SendResult,
    SessionNotConnected,
    SessionStatus,
)
from wa_session_worker.metrics import (
    COMMAND_SECONDS,
    COMMANDS,
    ENGINE_EVENTS,
    FAILOVER_START_SECONDS,
    SESSION_STARTS,
    SESSIONS,
)
from wa_session_worker.repository.base import (
    ActivityRec,
    EventRec,
    InstanceRec,
    MessageRec,
    Repository,
)
from wa_session_worker.service import guard, outbox, views
from wa_session_worker.service.views import ApiError
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore, wall_clock

log = get_logger(__name__)

CONNECT_WAIT_S = 10.0  # longest a command waits for a session that is still connecting
CONSUMER_DRAIN_S = 30.0  # longest wait for in-flight commands when a shard queue is released

T = TypeVar("T")

_STATUS_RANK = {"pending": 0, "received": 1, "sent": 1, "delivered": 2, "read": 3, "played": 4}
_SEND_COMMANDS = {SessionCommand.SEND_TEXT, SessionCommand.SEND_MEDIA}


def _alias(names: list[str] | None) -> list[str] | None:
    """Split comma lists and map old event/action names (``connection_opened``) to canonical."""
    if not names:
        return None
    out: list[str] = []
    for item in names:
        for name in item.split(","):
            name = name.strip()
            if name:
                out.append(EVENT_NAME_ALIASES.get(name, name))
    return out or None


class WorkerService:
    """Everything one worker does with instances. ``engine`` and ``leases`` are set by ``main``."""

    def __init__(
        self,
        settings: WorkerSettings,
        repo: Repository,
        bus: Bus,
        leases: LeaseStore,
        *,
        store_url: str,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.bus = bus
        self.leases = leases
        self.store_url = store_url
        self.engine: Engine | None = None
        self.command_handler: Handler | None = None  # set by consumers.py
        self.sessions: dict[str, int] = {}  # instance id -> shard, sessions running here
        self.consumers: dict[int, Consumer] = {}
        self._owners: dict[str, str] = {}  # instance id -> user id (cache for event envelopes)
        # Only while a command holds or awaits it: commands naming random ids cannot grow this.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._connected: dict[str, asyncio.Event] = {}  # set while the session is connected
        # The events feed's clock (see _stamped): per instance, the time of its newest kept event
        # and the lock that orders its kept events' writes.
        self._stamps: dict[str, datetime] = {}
        self._stamp_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._start_sem = asyncio.Semaphore(settings.session_start_concurrency)
        # Published events whose outbox entries are deleted in batches (``main`` runs it).
        self.published = outbox.Published(repo)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def eng(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("engine not started")
        return self.engine

    def lock(self, instance_id: str) -> asyncio.Lock:
        """The lock serialising ``instance_id``'s commands (kept while anyone references it)."""
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        return lock

    def _connected_event(self, instance_id: str) -> asyncio.Event:
        event = self._connected.get(instance_id)
        if event is None:
            event = self._connected[instance_id] = asyncio.Event()
        return event

    async def _await_connected(self, instance_id: str, cmd: Command) -> None:
        """Wait (bounded by the command's deadline and ``CONNECT_WAIT_S``) for a session that is
        still connecting, e.g. just taken over from a dead worker; 409 if it does not connect."""
        if instance_id not in self.sessions:
            raise SessionNotConnected(instance_id)
        if self.eng.status(instance_id) == SessionStatus.CONNECTED:
            return
        if self.eng.status(instance_id) != SessionStatus.CONNECTING:
            raise SessionNotConnected(instance_id)
        wait_s = min(CONNECT_WAIT_S, cmd.remaining_s() - 0.5)
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected_event(instance_id).wait(), wait_s)
        if self.eng.status(instance_id) != SessionStatus.CONNECTED:
            raise SessionNotConnected(instance_id)

    def session_count(self) -> int:
        return len(self.sessions)

    def update_session_gauge(self) -> None:
        counts = dict.fromkeys([s.value for s in SessionStatus], 0)
        if self.engine is not None:
            for instance_id in list(self.sessions):
                counts[self.engine.status(instance_id).value] += 1
        for status, count in counts.items():
            SESSIONS.labels(status).set(count)

    async def _user_of(self, instance_id: str) -> str | None:
        user = self._owners.get(instance_id)
        if user is None:
            rec = await self.repo.get_instance(instance_id)
            if rec is not None:
                user = self._owners[instance_id] = rec.user_id
        return user

    async def _stamped(self, instance_id: str, write: Callable[[datetime], Awaitable[T]]) -> T:
        """Run ``write(at)``, the store write of an event kept for the events feed, with ``at``
        its time: a whole millisecond later than every earlier kept event of the instance (its
        newest stored one after a restart or a shard move), and written before the next one of
        the instance is stamped.

        The feed shows times in milliseconds and ``since`` means "after that millisecond": so
        an instance's feed times follow the order its events were committed and no two are
        equal, and a client passing back ``latestTimestamp`` never sees an event twice nor
        misses one that was committed after its poll (with stamps taken before a write, a late
        commit could fall behind the client's ``since``; two events in one millisecond could
        be split by a poll).
        """
        lock = self._stamp_locks.get(instance_id)
        if lock is None:
            lock = self._stamp_locks[instance_id] = asyncio.Lock()
        async with lock:
            last = self._stamps.get(instance_id)
            if last is None:
                newest, _ = await self.repo.recent_events(instance_id, since=None, types=None, limit=1)
                last = newest[0].occurred_at if newest else None
            at = _whole_ms(utcnow())
            if last is not None and at <= last:
                at = _whole_ms(last) + timedelta(milliseconds=1)
            self._stamps[instance_id] = at
            return await write(at)

    def _forget_stamps(self, shard: int | None = None, instance_id: str | None = None) -> None:
        """Drop cached feed times (another worker may write the instance's events next)."""
        if instance_id is not None:
            self._stamps.pop(instance_id, None)
        if shard is not None:
            for iid in [i for i in self._stamps if shard_for(i, self.settings.shard_count) == shard]:
                self._stamps.pop(iid, None)

    async def _publish(
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
        """Stage the event (outbox entry, and the recent-event row for the polling endpoint, in
        one step), then publish it; an unconfirmed event is published by the outbox relay."""
        shards = self.settings.shard_count

        def build(at: datetime | None = None) -> Event:
            return Event(
                type=type_,
                instance_id=instance_id,
                user_id=user_id,
                data=data,
                meta=meta or {},
                **({"occurred_at": at} if at is not None else {}),
            )

        if not keep_recent:
            event = build()
            await self.repo.stage_event(None, outbox.pending(event, shards))
        else:

            async def write(at: datetime) -> Event:
                event = build(at)
                kept = EventRec(event.id, instance_id, type_, at, recent if recent is not None else data)
                await self.repo.stage_event(kept, outbox.pending(event, shards))
                return event

            event = await self._stamped(instance_id, write)
        await outbox.deliver(self.bus, event, self.published)

    def owned_shards(self) -> list[int]:
        """Shards whose queue this worker consumes (their outbox entries are this worker's)."""
        return list(self.consumers)

    async def _activity(self, instance_id: str, action: str, details: dict[str, Any] | None = None) -> None:
        await self.repo.add_activity(ActivityRec(new_id(), instance_id, action, details or {}, utcnow()))

    def _snapshot(self, rec: InstanceRec) -> dict[str, Any]:
        return InstanceSnapshot(
            instance_id=rec.id,
            user_id=rec.user_id,
            name=rec.name,
            webhook_url=rec.webhook_url,
            webhook_enabled=rec.webhook_enabled,
            webhook_settings=WebhookSettings.model_validate(rec.webhook_settings),
            updated_at=views.iso(rec.updated_at) or "",
        ).dump()

    # --- sessions (ShardOwner) ----------------------------------------------------------------

    async def shard_acquired(self, shard: int) -> None:
        started = time.monotonic()
        recs = await self.repo.instances_in_shard(shard)
        resumable = [r for r in recs if r.device_jid or r.status in ("connecting", "qr")]
        for rec in recs:
            self._owners[rec.id] = rec.user_id
        await asyncio.gather(*(self._start_session(r, reason="takeover") for r in resumable))
        if self.command_handler is None:
            raise RuntimeError("command handler not set")
        self.consumers[shard] = await self.bus.consume(shard_queue(shard), self.command_handler)
        FAILOVER_START_SECONDS.observe(time.monotonic() - started)
        log.debug(
            "shard started",
            shard=shard,
            sessions=len(resumable),
            seconds=round(time.monotonic() - started, 3),
        )

    async def shard_releasing(self, shard: int, *, urgent: bool) -> None:
        """Stop consuming the shard's queue and stop its sessions.

        Giving a shard up (``urgent`` false): in-flight commands finish first, then the sessions
        stop. Losing it (``urgent``): the sessions stop at once, while in-flight commands finish
        (they fail as not connected). The consumer's channel is closed only once its in-flight
        handlers are done (``CONSUMER_DRAIN_S`` at most), since an ack on a closed channel is a
        connection error that would drop every other consumer of this worker.
        """
        consumer = self.consumers.pop(shard, None)
        ids = [i for i, k in list(self.sessions.items()) if k == shard]

        async def drain() -> None:
            if consumer is not None:
                await consumer.cancel(timeout_s=CONSUMER_DRAIN_S)

        async def stop() -> None:
            await asyncio.gather(*(self._stop_session(i) for i in ids))

        if urgent:
            await asyncio.gather(drain(), stop())
        else:
            await drain()
            await stop()
        self._forget_stamps(shard=shard)
        log.debug("shard stopped", shard=shard, sessions=len(ids), urgent=urgent)

    async def _start_session(self, rec: InstanceRec, *, reason: str) -> None:
        if reason != "takeover" and rec.shard not in self.consumers:
            # A command still in flight while its shard is being released: the shard's next
            # owner starts this session (it resumes connecting and linked instances).
            log.warning(
                "session not started: shard no longer owned here", instance_id=rec.id, shard=rec.shard
            )
            return
        device = DeviceRecord(rec.device_jid, rec.device_data or {}) if rec.device_jid else None
        async with self._start_sem:
            self.sessions[rec.id] = rec.shard
            try:
                await self.eng.start_session(rec.id, device)
            except Exception:
                self.sessions.pop(rec.id, None)
                log.exception("session start failed", instance_id=rec.id)
                return
        SESSION_STARTS.labels(reason).inc()

    async def _stop_session(self, instance_id: str) -> None:
        self._connected_event(instance_id).clear()
        if self.sessions.pop(instance_id, None) is None:
            return
        try:
            await self.eng.stop_session(instance_id)
        except Exception:
            log.exception("session stop failed", instance_id=instance_id)

    async def stop_all(self) -> None:
        """Stop every session still running here (shutdown after the shards were released)."""
        await asyncio.gather(*(self._stop_session(i) for i in list(self.sessions)))

    # --- engine events ------------------------------------------------------------------------

    async def on_engine_event(self, event: EngineEvent) -> None:
        """Store and publish one engine event; returns once both are durable."""
        ENGINE_EVENTS.labels(type(event).__name__).inc()
        instance_id = event.instance_id
        user_id = await self._user_of(instance_id)
        if user_id is None:
            log.info(
                "event for an unknown instance ignored", instance_id=instance_id, kind=type(event).__name__
            )
            return
        now = utcnow()
        running = instance_id in self.sessions
        if isinstance(event, QrCode):
            if not running:
                return
            expires_at = now + timedelta(seconds=event.expires_in_s)
            await self.repo.update_instance(
                instance_id, status="qr", qr_code=event.code, qr_expires_at=expires_at, last_activity_at=now
            )
            await self._activity(instance_id, "qr_received", {"attempt": event.attempt})
            data = QrReceivedData(instance_id=instance_id, qr_code=event.code).dump()
            # When the code stops working (meta: not part of the webhook payload; the gateway's
            # live stream shows it so the dashboard's countdown is exact; GET .../qr too).
            expires = views.iso(expires_at)
            await self._publish(
                instance_id, user_id, EventType.QR_RECEIVED, data, meta={"expiresAt": expires}
            )
        elif isinstance(event, Paired):
            await self.repo.update_instance(
                instance_id,
                device_jid=event.device.jid,
                device_data=dict(event.device.data),
                push_name=_fit(event.push_name, guard.MAX_PUSH_NAME),
                last_activity_at=now,
            )
            await self._activity(
                instance_id,
                "paired",
                {"jid": event.device.jid, "pushName": event.push_name, "platform": event.platform},
            )
        elif isinstance(event, Connected):
            if not running:
                return
            fields: dict[str, Any] = {
                "status": "connected",
                "qr_code": None,
                "qr_expires_at": None,
                "last_activity_at": now,
            }
            if event.push_name is not None:
                fields["push_name"] = _fit(event.push_name, guard.MAX_PUSH_NAME)
            await self.repo.update_instance(instance_id, **fields)
            await self._activity(instance_id, "connected", {"jid": event.jid})
            await self._publish(
                instance_id, user_id, EventType.CONNECTED, ConnectedData(instance_id=instance_id).dump()
            )
        elif isinstance(event, Disconnected):
            self._connected_event(instance_id).clear()
            if not running:
                return  # a session we stopped on purpose (shard moved, shutdown)
            status = "connecting" if event.will_reconnect else "disconnected"
            await self.repo.update_instance(instance_id, status=status, last_activity_at=now)
            await self._activity(
                instance_id, "disconnected", {"reason": event.reason, "willReconnect": event.will_reconnect}
            )
            data = DisconnectedData(
                instance_id=instance_id, reason=event.reason, will_reconnect=event.will_reconnect
            ).dump()
            await self._publish(instance_id, user_id, EventType.DISCONNECTED, data)
        elif isinstance(event, LoggedOut):
            self._connected_event(instance_id).clear()
            if not running:
                return
            self.sessions.pop(instance_id, None)
            fields = {"status": "logged_out", "qr_code": None, "qr_expires_at": None, "last_activity_at": now}
            if event.reason != "qr_timeout":
                fields.update(device_jid=None, device_data=None, push_name=None)
            await self.repo.update_instance(instance_id, **fields)
            await self._activity(instance_id, "logged_out", {"reason": event.reason})
            data = DisconnectedData(instance_id=instance_id, reason=event.reason, will_reconnect=False).dump()
            await self._publish(instance_id, user_id, EventType.DISCONNECTED, data)
        elif isinstance(event, Message):
            await self._on_message(event, user_id)
        elif isinstance(event, Receipt):
            await self._on_receipt(event, user_id)

    async def _on_message(self, msg: Message, user_id: str) -> None:
        now = utcnow()
        media = msg.media
        at = _from_unix(msg.timestamp)
        # Text from WhatsApp is made storable (no NUL, no unpaired surrogate, within its column):
        # a message the store refused would be lost.
        text = storable(msg.text or (media.caption if media and media.caption else ""))
        push_name = _fit(msg.push_name, guard.MAX_CONTACT_NAME)
        msg = replace(msg, push_name=push_name, type=storable(msg.type, _MESSAGE_TYPE_MAX))
        rec = MessageRec(
            id=new_id(),
            instance_id=msg.instance_id,
            message_id=msg.message_id,
            remote_jid=msg.chat_jid,
            from_me=msg.from_me,
            message_type=msg.type,
            status="sent" if msg.from_me else "received",
            timestamp=at,
            created_at=now,
            updated_at=now,
            content=text,
            has_media=media is not None,
            caption=_fit(media.caption, None) if media else None,
            mime_type=_fit(media.mimetype, guard.MAX_MIMETYPE) if media else None,
            file_name=_fit(media.filename, _FILE_NAME_MAX) if media else None,
            media_size=media.size if media else None,
            metadata={"timestamp": msg.timestamp, "pushName": push_name, "sender": msg.sender_jid},
        )
        meta = {
            "hasMedia": media is not None,
            "mediaSize": media.size if media else 0,
            "mimeType": rec.mime_type,
        }
        # The events feed's data: the reference's fields, plus "from" (received) or "to" (sent) as
        # the webhook payloads carry them.
        recent: dict[str, Any] = {
            "instanceId": msg.instance_id,
            "messageId": msg.message_id,
            "remoteJid": msg.chat_jid,
            "fromMe": msg.from_me,
            "body": rec.content,
            "hasMedia": rec.has_media,
            "status": rec.status,
            "metadata": {"pushName": msg.push_name, "timestamp": msg.timestamp},
        }
        if msg.from_me:
            recent["to"] = msg.chat_jid
            data = MessageSentData(
                instance_id=msg.instance_id,
                message_id=msg.message_id,
                to=msg.chat_jid,
                body=rec.content,
                type=msg.type,
                timestamp=msg.timestamp,
                has_media=rec.has_media,
            ).dump()
            type_ = EventType.MESSAGE_SENT
        else:
            recent["from"] = msg.sender_jid if msg.is_group else msg.chat_jid
            data = MessageReceivedData(
                instance_id=msg.instance_id,
                message_id=msg.message_id,
                from_=recent["from"],
                body=rec.content,
                type=msg.type,
                timestamp=msg.timestamp,
                has_media=rec.has_media,
                push_name=msg.push_name,
            ).dump()
            type_ = EventType.MESSAGE_RECEIVED

        async def write(at: datetime) -> Event | None:
            event = Event(
                type=type_, instance_id=msg.instance_id, user_id=user_id, data=data, meta=meta, occurred_at=at
            )
            kept = EventRec(event.id, msg.instance_id, type_, at, recent)
            staged = outbox.pending(event, self.settings.shard_count)
            if not await self.repo.record_message(rec, kept, staged):
                return None  # already stored (our own send, or a redelivered event)
            return event

        event = await self._stamped(msg.instance_id, write)
        if event is not None:
            await outbox.deliver(self.bus, event, self.published)

    async def _on_receipt(self, receipt: Receipt, user_id: str) -> None:
        rank = _STATUS_RANK.get(receipt.status)
        if rank is None:
            return
        lower = [s for s, r in _STATUS_RANK.items() if r < rank]
        changed = await self.repo.update_message_status(
            receipt.instance_id,
            list(receipt.message_ids),
            receipt.status,
            _from_unix(receipt.timestamp),
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
            await self._publish(receipt.instance_id, user_id, EventType.MESSAGE_STATUS, data)

    # --- requests -----------------------------------------------------------------------------

    async def _instance_for(self, caller: Caller | None, instance_id: str | None) -> InstanceRec:
        if caller is None:
            raise ApiError(401, "request carries no caller identity")
        if not instance_id:
            raise ApiError(400, "instance id is required")
        rec = await self.repo.get_instance(instance_id)
        if rec is None or (not caller.is_admin and rec.user_id != caller.user_id):
            raise ApiError(404, "Instance not found")
        return rec

    async def handle_command(self, cmd: Command) -> Reply | None:
        """Run ``cmd``; ``None`` when it is dropped (deadline passed). Never raises for request
        errors (they become failure replies); store failures raise (the bus redelivers)."""
        if cmd.expired():
            COMMANDS.labels(cmd.name if cmd.name in _COMMAND_NAMES else "unknown", "expired").inc()
            log.info("expired command dropped", name=cmd.name, request_id=cmd.id, instance_id=cmd.instance_id)
            return None
        handler = self._command_handlers().get(cmd.name)
        if handler is None:
            COMMANDS.labels("unknown", "error").inc()
            return Reply.failure(400, f"unknown command {cmd.name[:64]!r}")
        refused = guard.check_request(cmd)
        if refused is not None:
            COMMANDS.labels(cmd.name, "error").inc()
            return refused
        if not cmd.instance_id:
            return Reply.failure(400, "instance id is required")
        started = time.perf_counter()
        async with self.lock(cmd.instance_id):
            reply = await _run(handler, cmd)
        COMMAND_SECONDS.labels(cmd.name).observe(time.perf_counter() - started)
        COMMANDS.labels(cmd.name, "ok" if reply.ok else "error").inc()
        return reply

    async def handle_query(self, query: Query) -> Reply | None:
        if query.expired():
            COMMANDS.labels(query.name if query.name in _QUERY_NAMES else "unknown", "expired").inc()
            return None
        handler = self._query_handlers().get(query.name)
        if handler is None:
            COMMANDS.labels("unknown", "error").inc()
            return Reply.failure(400, f"unknown query {query.name[:64]!r}")
        refused = guard.check_request(query)
        if refused is not None:
            COMMANDS.labels(query.name, "error").inc()
            return refused
        started = time.perf_counter()
        reply = await _run(handler, query)
        COMMAND_SECONDS.labels(query.name).observe(time.perf_counter() - started)
        COMMANDS.labels(query.name, "ok" if reply.ok else "error").inc()
        return reply

    def _command_handlers(self) -> dict[str, Callable[[Command], Awaitable[Reply]]]:
        return {
            SessionCommand.CREATE_INSTANCE: self.create_instance,
            SessionCommand.UPDATE_INSTANCE: self.update_instance,
            SessionCommand.DELETE_INSTANCE: self.delete_instance,
            SessionCommand.RECONNECT: self.reconnect,
            SessionCommand.LOGOUT: self.logout,
            SessionCommand.PAIR_PHONE: self.pair_phone,
            SessionCommand.SEND_TEXT: self.send,
            SessionCommand.SEND_MEDIA: self.send,
            SessionCommand.FETCH_CONTACTS: self.fetch_contacts,
            SessionCommand.ADD_CONTACT: self.add_contact,
            SessionCommand.IMPORT_CONTACTS: self.import_contacts,
            SessionCommand.SAVE_CONTACT: self.save_contact,
        }

    def _query_handlers(self) -> dict[str, Callable[[Query], Awaitable[Reply]]]:
        return {
            SessionQuery.GET_INSTANCE: self.get_instance,
            SessionQuery.LIST_INSTANCES: self.list_instances,
            SessionQuery.STATUS: self.status,
            SessionQuery.QR: self.qr,
            SessionQuery.ACTIVITY: self.activity,
            SessionQuery.EVENTS: self.events,
            SessionQuery.CONTACTS_DB: self.contacts_db,
            SessionQuery.CHAT_MESSAGES: self.chat_messages,
            SessionQuery.CLUSTER: self.cluster,
            SessionQuery.STORE_STATUS: self.store_status,
        }

    # --- instance lifecycle -------------------------------------------------------------------

    async def create_instance(self, cmd: Command) -> Reply:
        if cmd.caller is None:
            raise ApiError(401, "request carries no caller identity")
        assert cmd.instance_id is not None
        body = CreateInstance.model_validate(cmd.payload)
        now = utcnow()
        settings = WebhookSettings(
            notify_received=body.notify_received,
            notify_sent=body.notify_sent,
            notify_delivery=body.notify_delivery,
            notify_read=body.notify_read,
            max_retries=body.max_retries,
            retry_interval=body.retry_interval,
            secret=body.webhook_secret,
            headers=body.headers,
        )
        rec = InstanceRec(
            id=cmd.instance_id,
            user_id=cmd.caller.user_id,
            name=body.name,
            description=body.description,
            shard=shard_for(cmd.instance_id, self.settings.shard_count),
            status="connecting",
            created_at=now,
            updated_at=now,
            webhook_url=body.webhook_url,
            webhook_enabled=body.webhook_enabled,
            webhook_settings=settings.dump(),
            last_activity_at=now,
        )
        if not await self.repo.create_instance(rec):
            existing = await self.repo.get_instance(rec.id)
            if existing is None or existing.user_id != rec.user_id:
                raise ApiError(409, "an instance with this id already exists")
            rec = existing  # a redelivered or retried create: answer as the first time
            # The first run may have stopped between storing the instance and staging its event:
            # announce it again (replicas keep the newest snapshot, so a repeat changes nothing).
            self._owners[rec.id] = rec.user_id
            await self._publish(
                rec.id, rec.user_id, EventType.INSTANCE_CREATED, self._snapshot(rec), keep_recent=False
            )
            if rec.id in self.sessions:
                return Reply.success(views.instance_body(rec), status=201)
        else:
            self._owners[rec.id] = rec.user_id
            await self._activity(rec.id, "created", {"name": rec.name})
            await self._publish(
                rec.id, rec.user_id, EventType.INSTANCE_CREATED, self._snapshot(rec), keep_recent=False
            )
        if rec.status != "logged_out":
            await self._start_session(rec, reason="create")
        return Reply.success(views.instance_body(rec), status=201)

    async def update_instance(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        body = UpdateInstance.model_validate(cmd.payload)
        fields: dict[str, Any] = {}
        for name in ("name", "description", "webhook_url", "webhook_enabled"):
            value = getattr(body, name)
            if name in body.model_fields_set and (
                value is not None or name in ("description", "webhook_url")
            ):
                fields[name] = value
        if body.webhook_settings is not None:
            merged = {
                **rec.webhook_settings,
                **body.webhook_settings.model_dump(by_alias=True, exclude_unset=True),
            }
            fields["webhook_settings"] = WebhookSettings.model_validate(merged).dump()
        webhook_changed = any(
            fields.get(k, getattr(rec, k)) != getattr(rec, k)
            for k in ("webhook_url", "webhook_enabled", "webhook_settings")
        )
        fields["updated_at"] = utcnow()
        updated = await self.repo.update_instance(rec.id, **fields)
        if updated is None:
            raise ApiError(404, "Instance not found")
        await self._activity(rec.id, "updated", {"fields": sorted(k for k in fields if k != "updated_at")})
        await self._publish(
            rec.id, rec.user_id, EventType.INSTANCE_UPDATED, self._snapshot(updated), keep_recent=False
        )
        if webhook_changed:
            data = WebhookUpdatedData(
                instance_id=rec.id, timestamp=views.iso(updated.updated_at) or ""
            ).dump()
            await self._publish(rec.id, rec.user_id, EventType.WEBHOOK_UPDATED, data)
        return Reply.success(views.instance_update_body(updated))

    async def delete_instance(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        if self.sessions.pop(rec.id, None) is not None or rec.device_jid:
            try:
                await self.eng.logout(rec.id)
            except Exception as exc:
                log.warning("logout during delete failed", instance_id=rec.id, error=str(exc))
                try:
                    await self.eng.stop_session(rec.id)
                except Exception:
                    log.exception("stop during delete failed", instance_id=rec.id)
        await self.repo.delete_instance(rec.id)
        self._owners.pop(rec.id, None)
        self._connected.pop(rec.id, None)
        self._forget_stamps(instance_id=rec.id)
        data = InstanceDeletedData(instance_id=rec.id, user_id=rec.user_id).dump()
        await self._publish(rec.id, rec.user_id, EventType.INSTANCE_DELETED, data, keep_recent=False)
        return Reply.success({"success": True, "message": f"Instance {rec.id} deleted successfully"})

    async def reconnect(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        await self._stop_session(rec.id)
        rec = (
            await self.repo.update_instance(
                rec.id, status="connecting", qr_code=None, qr_expires_at=None, updated_at=utcnow()
            )
            or rec
        )
        await self._activity(rec.id, "reconnect", {"withDevice": bool(rec.device_jid)})
        await self._start_session(rec, reason="reconnect")
        return Reply.success({"success": True, "message": f"Instance {rec.id} reconnected"})

    async def logout(self, cmd: Command) -> Reply:
        """Unlink the device and stop the session: ``disconnected`` with ``reason: "logout"``
        (the reference's example). An instance already logged out (no session here, no device)
        answers the same 200 and emits nothing: its ``disconnected`` was already sent.

        The event is staged before the instance is marked logged out: a run interrupted between
        the two is repeated in full by the redelivered command (at worst a second event, never
        a lost one)."""
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        answer = Reply.success({"success": True, "message": f"Instance {rec.id} logged out"})
        was_running = self.sessions.pop(rec.id, None) is not None
        if not was_running and not rec.device_jid and rec.status == "logged_out":
            return answer
        if was_running or rec.device_jid:
            with contextlib.suppress(SessionNotConnected):
                await self.eng.logout(rec.id)
        data = DisconnectedData(instance_id=rec.id, reason="logout", will_reconnect=False).dump()
        await self._publish(rec.id, rec.user_id, EventType.DISCONNECTED, data)
        now = utcnow()
        await self.repo.update_instance(
            rec.id,
            status="logged_out",
            qr_code=None,
            qr_expires_at=None,
            device_jid=None,
            device_data=None,
            push_name=None,
            last_activity_at=now,
        )
        await self._activity(rec.id, "logged_out", {"reason": "logout"})
        return answer

    async def pair_phone(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        body = PairPhone.model_validate(cmd.payload)
        phone = views.to_jid(body.phone, groups=False, lids=False).split("@", 1)[0]
        if rec.status == "connected":
            raise ApiError(409, "instance is already connected")
        if rec.id not in self.sessions:
            await self._start_session(rec, reason="reconnect")
        code = await self.eng.pair_phone(rec.id, phone)
        await self._activity(rec.id, "pairing_code", {"phone": phone})
        return Reply.success({"pairingCode": code})

    # --- sending ------------------------------------------------------------------------------

    async def send(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        key = cmd.idempotency_key or f"request:{cmd.id}"
        previous = await self.repo.idempotency_begin(rec.id, key, cmd.name)
        if previous is not None:
            COMMANDS.labels(cmd.name, "duplicate").inc()
            if previous.state == "done" and previous.reply is not None:
                return Reply.model_validate(previous.reply)
            raise ApiError(
                409,
                "an earlier attempt of this send was interrupted (worker failover); its outcome is "
                "unknown, so it is not sent again: check the chat history before retrying with a new key",
            )
        try:
            reply = await self._send(rec, cmd)
        except (ApiError, EngineError, ValidationError):
            await self.repo.idempotency_finish(rec.id, key, None)  # nothing was sent: a retry may run
            raise
        await self.repo.idempotency_finish(rec.id, key, reply.model_dump(mode="json"))
        return reply

    async def _send(self, rec: InstanceRec, cmd: Command) -> Reply:
        if cmd.name == SessionCommand.SEND_TEXT:
            text = SendText.model_validate(cmd.payload)
            jid = views.to_jid(text.phone)
            await self._await_connected(rec.id, cmd)
            result = await self.eng.send_text(rec.id, jid, text.message)
            await self._store_sent(rec, jid, result, "text", text.message)
            return Reply.success({"id": result.message_id})
        body = SendMedia.model_validate(cmd.payload)
        jid = views.to_jid(body.phone)
        if (body.url is None) == (body.data_base64 is None):
            raise ApiError(400, "exactly one of url and dataBase64 is required")
        await self._await_connected(rec.id, cmd)
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
        result = await self.eng.send_media(rec.id, jid, out)
        kind = media_mod.message_type_for(media.mimetype)
        await self._store_sent(
            rec,
            jid,
            result,
            kind,
            body.caption or "",
            media_url=body.url,
            caption=body.caption,
            mime_type=media.mimetype,
            file_name=media.filename,
            media_size=len(media.data),
        )
        return Reply.success({"id": result.message_id})

    async def _store_sent(
        self,
        rec: InstanceRec,
        jid: str,
        result: SendResult,
        kind: str,
        body: str,
        *,
        media_url: str | None = None,
        caption: str | None = None,
        mime_type: str | None = None,
        file_name: str | None = None,
        media_size: int | None = None,
    ) -> None:
        """Store an outgoing message and publish ``message_sent`` (before its id is returned)."""
        now = utcnow()
        has_media = mime_type is not None
        msg = MessageRec(
            id=new_id(),
            instance_id=rec.id,
            message_id=result.message_id,
            remote_jid=jid,
            from_me=True,
            message_type=kind,
            status="sent",
            timestamp=_from_unix(result.timestamp),
            created_at=now,
            updated_at=now,
            content=body,
            has_media=has_media,
            media_url=media_url,
            caption=caption,
            mime_type=mime_type,
            file_name=file_name,
            media_size=media_size,
            metadata={"timestamp": result.timestamp},
            status_updated_at=now,
        )
        data = MessageSentData(
            instance_id=rec.id,
            message_id=result.message_id,
            to=jid,
            body=body,
            type=kind,
            timestamp=result.timestamp,
            has_media=has_media,
        ).dump()
        recent = {
            "instanceId": rec.id,
            "messageId": result.message_id,
            "remoteJid": jid,
            "fromMe": True,
            "to": jid,
            "body": body,
            "hasMedia": has_media,
            "status": "sent",
            "metadata": {"timestamp": result.timestamp},
        }
        meta = {"hasMedia": has_media, "mediaSize": media_size or 0, "mimeType": mime_type}

        async def write(at: datetime) -> Event | None:
            event = Event(
                type=EventType.MESSAGE_SENT,
                instance_id=rec.id,
                user_id=rec.user_id,
                data=data,
                meta=meta,
                occurred_at=at,
            )
            kept = EventRec(event.id, rec.id, event.type, at, recent)
            staged = outbox.pending(event, self.settings.shard_count)
            if not await self.repo.record_message(msg, kept, staged):
                return None  # the engine already reported it (Message event with from_me)
            return event

        event = await self._stamped(rec.id, write)
        if event is not None:
            await outbox.deliver(self.bus, event, self.published)

    # --- contacts -----------------------------------------------------------------------------

    def _require_session(self, rec: InstanceRec) -> None:
        if rec.id not in self.sessions:
            raise SessionNotConnected(rec.id)

    async def fetch_contacts(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        self._require_session(rec)
        contacts = await self.eng.fetch_contacts(rec.id)
        return Reply.success(
            {
                "contacts": [
                    {
                        "id": c.jid,
                        "name": c.name or c.push_name,
                        "number": c.jid.split("@", 1)[0],
                        "isGroup": c.is_group,
                    }
                    for c in contacts
                ]
            }
        )

    async def add_contact(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        body = AddContact.model_validate(cmd.payload)
        phone = views.to_jid(body.phone, groups=False, lids=False).split("@", 1)[0]
        self._require_session(rec)
        jid = await self.eng.check_number(rec.id, phone)
        if jid is None:
            raise ApiError(
                400, f"{phone} is not on WhatsApp", [{"field": "phone", "message": "not on WhatsApp"}]
            )
        number = jid.split("@", 1)[0]
        # Into the account's contact book too, so GET .../contacts (the live session's list)
        # shows the name; an engine keeping the book in the device record hands it back.
        device = await self.eng.add_contact(rec.id, jid, body.name)
        if device is not None and device.jid == rec.device_jid:
            await self.repo.update_instance(rec.id, device_data=dict(device.data))
        contact = await self.repo.upsert_contact(rec.id, jid, number=number, name=body.name)
        return Reply.success(
            {
                "success": True,
                "message": "Contact successfully added",
                "contact": {"id": jid, "number": number, "name": contact.name},
            }
        )

    async def import_contacts(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        self._require_session(rec)
        contacts = await self.eng.fetch_contacts(rec.id)
        for c in contacts:
            await self.repo.upsert_contact(
                rec.id,
                c.jid,
                number=c.jid.split("@", 1)[0],
                name=_fit(c.name, guard.MAX_CONTACT_NAME),
                push_name=_fit(c.push_name, guard.MAX_CONTACT_NAME),
                is_group=c.is_group,
            )
        count = len(contacts)
        await self._activity(rec.id, "contacts_imported", {"count": count})
        return Reply.success(
            {"success": True, "message": f"Successfully imported {count} contacts", "importedCount": count}
        )

    async def save_contact(self, cmd: Command) -> Reply:
        rec = await self._instance_for(cmd.caller, cmd.instance_id)
        body = SaveContact.model_validate(cmd.payload)
        if body.is_group:
            jid = views.to_group_jid(body.number, "number")
        else:
            jid = views.to_jid(body.number, "number")
        number = jid.split("@", 1)[0]
        contact = await self.repo.upsert_contact(
            rec.id,
            jid,
            number=number,
            name=body.name,
            push_name=body.push_name,
            is_group=body.is_group,
            profile_picture=body.profile_picture,
            about=body.about,
        )
        return Reply.success(views.contact_body(contact))

    # --- queries ------------------------------------------------------------------------------

    async def get_instance(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        return Reply.success(views.instance_detail(rec))

    async def list_instances(self, q: Query) -> Reply:
        if q.caller is None:
            raise ApiError(401, "request carries no caller identity")
        body = ListInstances.model_validate(q.payload)
        everyone = body.all_users and q.caller.is_admin
        recs = await self.repo.list_instances(None if everyone else q.caller.user_id)
        return Reply.success({"instances": [views.instance_list_item(r) for r in recs]})

    async def status(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        return Reply.success(views.status_body(rec))

    async def qr(self, q: Query) -> Reply:
        """200 ``{qrCode, expiresAt}`` (``expiresAt``: when the code stops working, ISO 8601
        UTC, ``null`` if unknown); 202 ``{message, status}`` otherwise (contract notes: clients
        rely on the 202): ``status`` is ``generating`` while a code is on its way, ``logged_out``
        after a logout or a linking timeout, when no code comes until the instance is
        reconnected (the message says so), so a polling client can stop."""
        rec = await self._instance_for(q.caller, q.instance_id)
        if rec.status == "qr" and rec.qr_code:
            return Reply.success({"qrCode": rec.qr_code, "expiresAt": views.iso(rec.qr_expires_at)})
        if rec.status == "connected":
            raise ApiError(409, "instance is already connected; no QR code is needed")
        if rec.status == "logged_out" and rec.id not in self.sessions:
            message = "The instance is logged out: reconnect it (POST .../reconnect) to get a new QR code."
            return Reply.success({"message": message, "status": "logged_out"}, status=202)
        message = "QR code generation in progress. Please try again in a few seconds."
        return Reply.success({"message": message, "status": "generating"}, status=202)

    async def activity(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        body = ActivityQuery.model_validate(q.payload)
        logs, total = await self.repo.list_activity(
            rec.id,
            actions=_alias(body.actions),
            start=views.parse_time(body.start_date, "startDate"),
            end=views.parse_time(body.end_date, "endDate"),
            skip=body.skip,
            limit=body.limit,
        )
        return Reply.success(
            {
                "logs": [views.activity_body(r) for r in logs],
                "pagination": views.pagination(total, body.limit, body.skip),
            }
        )

    async def events(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        body = EventsQuery.model_validate(q.payload)
        since = views.parse_time(body.since, "since")
        if since is not None:
            # Timestamps are shown with millisecond precision: "since" = after that millisecond, so
            # passing back latestTimestamp never returns the same event again (and no event of
            # the instance shares its millisecond with another: _stamped). With "since" the page
            # holds the oldest events after it (newest first), so a client polling with the
            # last latestTimestamp pages through a burst larger than "limit" without a gap.
            since += timedelta(microseconds=999 - since.microsecond % 1000)
        recs, more = await self.repo.recent_events(
            rec.id, since=since, types=_alias(body.types), limit=body.limit
        )
        # With nothing new after "since", latestTimestamp stays "since" (at millisecond
        # precision): a client that always passes back the last latestTimestamp keeps its place
        # instead of starting over from the newest events.
        latest = recs[0].occurred_at if recs else since
        return Reply.success(
            {
                "events": [views.event_body(r) for r in recs],
                "latestTimestamp": views.iso(latest),
                "count": len(recs),
                "hasMore": more,
            }
        )

    async def contacts_db(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        body = ContactsQuery.model_validate(q.payload)
        recs, total = await self.repo.list_contacts(
            rec.id, search=body.search, only_groups=body.only_groups, skip=body.skip, limit=body.limit
        )
        return Reply.success(
            {
                "contacts": [views.contact_body(r) for r in recs],
                "pagination": views.pagination(total, body.limit, body.skip),
            }
        )

    async def chat_messages(self, q: Query) -> Reply:
        rec = await self._instance_for(q.caller, q.instance_id)
        body = ChatMessagesQuery.model_validate(q.payload)
        jid = views.to_jid(body.chat_id, "chatId")
        recs, total = await self.repo.chat_messages(
            rec.id,
            jid,
            start=views.parse_time(body.start_date, "startDate"),
            end=views.parse_time(body.end_date, "endDate"),
            skip=body.skip,
            limit=body.limit,
        )
        return Reply.success(
            {
                "messages": [views.message_body(r) for r in recs],
                "pagination": views.pagination(total, body.limit, body.skip),
            }
        )

    async def cluster(self, q: Query) -> Reply:
        if q.caller is None or not q.caller.is_admin:
            raise ApiError(403, "admin role required")
        now = wall_clock()
        members = await self.leases.members()
        leases = await self.leases.leases()
        owned: dict[str, list[int]] = {}
        unowned: list[int] = []
        for lease in sorted(leases, key=lambda item: item.shard):
            if lease.owner is not None and lease.expires_at >= now:
                owned.setdefault(lease.owner, []).append(lease.shard)
            else:
                unowned.append(lease.shard)
        workers = []
        for m in members:
            alive = m.heartbeat_at >= now - self.settings.lease_ttl_s
            workers.append(
                {
                    "id": m.id,
                    "host": m.host,
                    "port": m.port,
                    "alive": alive,
                    "shards": owned.get(m.id, []),
                    "sessions": m.sessions,
                    "startedAt": views.iso(_from_unix(m.started_at)),
                    "heartbeatAt": views.iso(_from_unix(m.heartbeat_at)),
                }
            )
        epochs = {lease.shard: lease.epoch for lease in leases}
        return Reply.success(
            {
                "shardCount": self.settings.shard_count,
                "workers": workers,
                "unownedShards": unowned,
                "epochs": {str(k): v for k, v in sorted(epochs.items())},
            }
        )

    async def store_status(self, q: Query) -> Reply:
        if q.caller is None or not q.caller.is_admin:
            raise ApiError(403, "admin role required")
        return Reply.success(
            {
                "provider": self.repo.provider,
                "url": redact_url(self.store_url)
                if "://" in self.store_url and not self.store_url.startswith("mongodb")
                else _redact_mongo(self.store_url),
            }
        )

    # --- user deletion ------------------------------------------------------------------------

    async def delete_user_instances(self, user_id: str) -> int:
        """Send a DELETE command for each of ``user_id``'s instances to its shard's owner."""
        recs = await self.repo.list_instances(user_id)
        for rec in recs:
            cmd = Command(
                name=SessionCommand.DELETE_INSTANCE,
                caller=Caller(user_id=user_id, role="user"),
                instance_id=rec.id,
                deadline=utcnow() + timedelta(hours=1),
            )
            queue = shard_queue(shard_for(rec.id, self.settings.shard_count))
            await self.bus.publish(EXCHANGE_COMMANDS, queue, cmd.to_bytes(), message_id=cmd.id)
        if recs:
            log.info("instances of a deleted user queued for deletion", count=len(recs))
        return len(recs)

    async def prune(self) -> int:
        now = utcnow()
        return await self.repo.prune(
            now - timedelta(seconds=self.settings.recent_events_max_age_s),
            now - timedelta(seconds=self.settings.idempotency_ttl_s),
        )


_COMMAND_NAMES = {c.value for c in SessionCommand}
_QUERY_NAMES = {q.value for q in SessionQuery}
_MESSAGE_TYPE_MAX = guard.column_length(models.messages.c.message_type)
_FILE_NAME_MAX = guard.column_length(models.messages.c.file_name)


def _fit(value: str | None, limit: int | None) -> str | None:
    """Text from WhatsApp made storable in a column of ``limit`` characters (``None`` stays)."""
    return storable(value, limit) if value is not None else None


def _whole_ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def _from_unix(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


def _redact_mongo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{scheme}://{rest.rpartition('@')[2]}"


async def _run(handler: Callable[[Any], Awaitable[Reply]], request: Command | Query) -> Reply:
    try:
        return await handler(request)
    except ApiError as exc:
        return Reply.failure(exc.status, exc.message, exc.details)
    except EngineError as exc:
        return Reply.failure(exc.status, str(exc))
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return Reply.failure(400, "invalid request", details)
