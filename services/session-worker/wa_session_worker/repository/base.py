"""The document store of the session worker: records and the repository interface.

Three implementations honour one contract (``tests/test_repository_contract.py``):
:class:`~wa_session_worker.repository.sql.SqlRepository` (PostgreSQL/SQLite),
:class:`~wa_session_worker.repository.mongo.MongoRepository` (MongoDB) and, for fast tests of
service logic only, :class:`~wa_session_worker.repository.memory.MemoryRepository`. Record field names are
the SQL column names and the MongoDB document keys. All times are aware UTC ``datetime``.
Shard leases and worker membership are not here: they always live in the SQL store
(:mod:`wa_session_worker.shards.leases`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class InstanceRec:
    id: str
    user_id: str
    name: str
    shard: int
    status: str
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    qr_code: str | None = None
    webhook_url: str | None = None
    webhook_enabled: bool = False
    webhook_settings: dict[str, Any] = field(default_factory=dict)  # WebhookSettings.dump()
    device_jid: str | None = None
    device_data: dict[str, Any] | None = None
    last_activity_at: datetime | None = None
    push_name: str | None = None  # the linked account's own name (from the engine)
    qr_expires_at: datetime | None = None  # when ``qr_code`` stops working


@dataclass
class MessageRec:
    id: str
    instance_id: str
    message_id: str
    remote_jid: str
    from_me: bool
    message_type: str
    status: str
    timestamp: datetime
    created_at: datetime
    updated_at: datetime
    content: str = ""
    has_media: bool = False
    media_url: str | None = None
    caption: str | None = None
    mime_type: str | None = None
    file_name: str | None = None
    media_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status_updated_at: datetime | None = None


@dataclass
class ContactRec:
    id: str
    instance_id: str
    number: str
    remote_jid: str
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    push_name: str | None = None
    is_group: bool = False
    profile_picture: str | None = None
    about: str | None = None
    last_activity: datetime | None = None


@dataclass
class ActivityRec:
    id: str
    instance_id: str
    action: str
    details: dict[str, Any]
    created_at: datetime


@dataclass
class EventRec:
    id: str
    instance_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass
class OutboxRec:
    """An event committed with the state change it reports, until the broker confirmed it
    (transactional outbox). ``body`` is the event's JSON envelope (``Event.to_bytes``, UTF-8);
    ``shard`` is its instance's, so only the shard's owner relays it."""

    id: str  # the event id
    shard: int
    body: str
    created_at: datetime


@dataclass
class IdempotencyRec:
    instance_id: str
    key: str
    command: str
    state: str  # "pending" (started, outcome unknown) or "done"
    reply: dict[str, Any] | None
    created_at: datetime


class Repository(ABC):
    """Queries of the session worker's document data. Methods raise the driver's errors on
    store failures (the bus then redelivers the request)."""

    provider: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, create indexes where the store needs it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def ping(self) -> bool: ...

    # Instances
    @abstractmethod
    async def create_instance(self, rec: InstanceRec) -> bool:
        """Insert ``rec``; ``False`` if an instance with that id already exists."""

    @abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRec | None: ...

    @abstractmethod
    async def list_instances(self, user_id: str | None) -> list[InstanceRec]:
        """Instances of ``user_id`` (every instance when ``None``), oldest first."""

    @abstractmethod
    async def instances_in_shard(self, shard: int) -> list[InstanceRec]: ...

    @abstractmethod
    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRec | None:
        """Set ``fields`` (record field names); returns the updated record or ``None``."""

    @abstractmethod
    async def delete_instance(self, instance_id: str) -> bool:
        """Delete the instance and all its messages, contacts, activity, events, keys."""

    # Messages
    @abstractmethod
    async def add_message(self, rec: MessageRec) -> bool:
        """Insert ``rec``; ``False`` if (instance_id, message_id) is already stored."""

    @abstractmethod
    async def record_message(
        self, rec: MessageRec, event: EventRec | None, pending: OutboxRec | None = None
    ) -> bool:
        """Store a new message, its recent event, its outbox entry and the instance's
        ``last_activity_at`` in one step; ``False`` (and nothing written) if (instance_id,
        message_id) is already stored."""

    @abstractmethod
    async def update_message_status(
        self, instance_id: str, message_ids: list[str], status: str, at: datetime, from_statuses: list[str]
    ) -> list[MessageRec]:
        """Set ``status`` on those messages whose status is in ``from_statuses`` (a late
        "delivered" never overwrites "read"); returns the messages that changed."""

    @abstractmethod
    async def chat_messages(
        self,
        instance_id: str,
        remote_jid: str,
        *,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[MessageRec], int]:
        """One chat's messages, newest first, and the total matching count."""

    # Contacts
    @abstractmethod
    async def upsert_contact(self, instance_id: str, remote_jid: str, **fields: Any) -> ContactRec:
        """Create or update the contact ``remote_jid`` of an instance (``None`` values are kept
        unchanged on update)."""

    @abstractmethod
    async def list_contacts(
        self, instance_id: str, *, search: str | None, only_groups: bool, skip: int, limit: int
    ) -> tuple[list[ContactRec], int]:
        """Contacts ordered by name then number; ``search`` matches name, push name or number
        case-insensitively."""

    # Activity and recent events
    @abstractmethod
    async def add_activity(self, rec: ActivityRec) -> None: ...

    @abstractmethod
    async def list_activity(
        self,
        instance_id: str,
        *,
        actions: list[str] | None,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[ActivityRec], int]:
        """Newest first, and the total matching count."""

    @abstractmethod
    async def add_event(self, rec: EventRec) -> None: ...

    # Transactional outbox
    @abstractmethod
    async def stage_event(self, kept: EventRec | None, pending: OutboxRec) -> None:
        """Store an event's outbox entry (and its recent-event row) in one step, before it is
        published; a repeated ``pending.id`` is ignored."""

    @abstractmethod
    async def outbox_due(self, shards: list[int], before: datetime, limit: int) -> list[OutboxRec]:
        """Outbox entries of ``shards`` created before ``before``, oldest first, at most ``limit``."""

    @abstractmethod
    async def outbox_done(self, ids: list[str]) -> None:
        """Forget published entries (unknown ids are ignored)."""

    @abstractmethod
    async def recent_events(
        self, instance_id: str, *, since: datetime | None, types: list[str] | None, limit: int
    ) -> tuple[list[EventRec], bool]:
        """At most ``limit`` events, newest first, and whether more matched: without ``since``
        the newest ones; with it, the oldest ones after ``since`` (so a caller that continues
        from the newest time it got sees every event once)."""

    @abstractmethod
    async def prune(self, events_before: datetime, idempotency_before: datetime) -> int:
        """Delete recent events and idempotency records older than the given times."""

    # Idempotency
    @abstractmethod
    async def idempotency_begin(self, instance_id: str, key: str, command: str) -> IdempotencyRec | None:
        """Record that ``key`` starts; returns the existing record instead if there is one."""

    @abstractmethod
    async def idempotency_finish(self, instance_id: str, key: str, reply: dict[str, Any] | None) -> None:
        """Store the reply of ``key`` (``None`` forgets the key: the command may run again)."""
