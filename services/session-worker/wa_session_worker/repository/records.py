"""The records of the session worker's document store, and where each kind is stored.

Record field names are the SQL column names and the MongoDB document keys; :data:`KINDS` names
each kind's table (SQL) or collection (MongoDB) and its unique keys. All times are aware UTC
``datetime``: a repository converts them to its store's representation and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple


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


class Kind(NamedTuple):
    """Where the records of one class are stored: ``table`` is the SQL table and the MongoDB
    collection; no two records share the values of one of the ``unique`` field sets (SQL
    primary key and unique constraints, MongoDB unique indexes)."""

    table: str
    unique: tuple[tuple[str, ...], ...] = (("id",),)


KINDS: dict[type[Any], Kind] = {
    InstanceRec: Kind("instances"),
    MessageRec: Kind("messages", (("id",), ("instance_id", "message_id"))),
    ContactRec: Kind("contacts", (("id",), ("instance_id", "remote_jid"))),
    ActivityRec: Kind("activity"),
    EventRec: Kind("recent_events"),
    OutboxRec: Kind("outbox"),
    IdempotencyRec: Kind("idempotency", (("instance_id", "key"),)),
}
