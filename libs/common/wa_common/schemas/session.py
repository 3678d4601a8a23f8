"""The contract between the gateway and the session workers: operation names and payloads.

Commands (state changes, and anything that needs the live WhatsApp session) are routed to the
instance's shard queue ``wa.shard.<shard_for(instance_id)>``; queries are answered from the
store by any worker through ``wa.queries``. Every request carries the caller (``Caller``); the
worker answers 404 for an instance that does not exist or is not the caller's (admins see all).

Payloads use the reference's camelCase request fields. A reply's ``data`` is exactly the
reference's response body for the endpoint (so the gateway relays it), and its ``status`` is the
HTTP status to answer with (201 for create, 202 while a QR code is being generated, 404, 409...).
Phone numbers reach the worker already normalised by the gateway to digits in international
format without ``+`` (``79001234567``); chat ids are JIDs (``<digits>@s.whatsapp.net`` or
``<id>@g.us``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from wa_common.schemas.events import WebhookSettings
from wa_common.schemas.text import SafeStr, WebhookHeaders
from wa_common.schemas.wire import ApiModel

# Bounds at the edge, matching the session worker's columns (``wa_session_worker/models.py``).
MAX_URL = 2048
MAX_SKIP = 1_000_000_000
MAX_NAME = 200
MAX_CONTACT_NAME = 256
MAX_FILENAME = 255


class SessionCommand(StrEnum):
    """Commands, routed to the instance's shard. Reply data = the reference's response body."""

    CREATE_INSTANCE = "instance.create"  # CreateInstance → 201 instance body
    UPDATE_INSTANCE = "instance.update"  # UpdateInstance → update response
    DELETE_INSTANCE = "instance.delete"  # → {success, message}
    RECONNECT = "instance.reconnect"  # → {success, message}
    LOGOUT = "instance.logout"  # → {success, message}
    PAIR_PHONE = "instance.pair_phone"  # PairPhone → {pairingCode}
    SEND_TEXT = "message.send_text"  # SendText → {id}
    SEND_MEDIA = "message.send_media"  # SendMedia → {id}
    FETCH_CONTACTS = "contacts.fetch"  # → {contacts: [...]} from WhatsApp
    ADD_CONTACT = "contacts.add"  # AddContact → {success, message, contact}
    IMPORT_CONTACTS = "contacts.import"  # → {success, message, importedCount}
    SAVE_CONTACT = "contacts.save"  # SaveContact → contact body


class SessionQuery(StrEnum):
    """Queries, answered from the store by any worker (``wa.queries``)."""

    GET_INSTANCE = "instance.get"  # → instance body with webhookSettings and connectionStatus
    LIST_INSTANCES = "instance.list"  # ListInstances → {instances: [...]}
    STATUS = "instance.status"  # → status body
    QR = "instance.qr"  # → 200 {qrCode} or 202 {message, status: "generating"}
    ACTIVITY = "instance.activity"  # ActivityQuery → {logs, pagination}
    EVENTS = "instance.events"  # EventsQuery → {events, latestTimestamp, count, hasMore}
    CONTACTS_DB = "contacts.list_db"  # ContactsQuery → {contacts, pagination}
    CHAT_MESSAGES = "chat.messages"  # ChatMessagesQuery → {messages, pagination}
    CLUSTER = "cluster.workers"  # admin → {workers: [{id, shards: [...], sessions, ...}]}
    STORE_STATUS = "store.status"  # admin → {provider, url (no credentials)}


class CreateInstance(ApiModel):
    """``POST /api/instances`` body. The gateway generates ``instance_id`` (a ULID) so it can
    route the command to the new instance's shard before the instance exists. Custom
    ``headers``: see :data:`wa_common.schemas.text.WebhookHeaders` (at most 20, 8 KiB)."""

    name: SafeStr = Field(min_length=1, max_length=MAX_NAME)
    description: SafeStr | None = Field(default=None, max_length=2000)
    webhook_url: SafeStr | None = Field(default=None, max_length=MAX_URL)
    webhook_enabled: bool = False
    notify_received: bool = True
    notify_sent: bool = True
    notify_delivery: bool = False
    notify_read: bool = False
    max_retries: int = Field(3, ge=0, le=20)
    retry_interval: int = Field(60000, ge=1000, le=86_400_000)
    webhook_secret: SafeStr | None = Field(default=None, max_length=512)
    headers: WebhookHeaders = Field(default_factory=dict)


class WebhookSettingsInput(WebhookSettings):
    """``webhookSettings`` as a client sends it: the stored shape with its input bounds."""

    secret: SafeStr | None = Field(default=None, max_length=512)
    headers: WebhookHeaders = Field(default_factory=dict)


class UpdateInstance(ApiModel):
    """``PUT /api/instances/{id}`` body; absent fields are left unchanged."""

    name: SafeStr | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    description: SafeStr | None = Field(default=None, max_length=2000)
    webhook_url: SafeStr | None = Field(default=None, max_length=MAX_URL)
    webhook_enabled: bool | None = None
    webhook_settings: WebhookSettingsInput | None = None


class PairPhone(ApiModel):
    phone: SafeStr = Field(max_length=64, description="digits, international format without +")


class SendText(ApiModel):
    phone: SafeStr = Field(
        max_length=128, description="recipient digits, or a JID (…@s.whatsapp.net / …@g.us)"
    )
    message: SafeStr = Field(min_length=1, max_length=65536)


class SendMedia(ApiModel):
    """Media to send. Exactly one of ``url`` (the worker downloads it: size limit, timeout,
    content-type check, private-address check) or ``dataBase64`` (an uploaded file, sent by the
    gateway base64-encoded in the command) is set."""

    phone: SafeStr = Field(max_length=128)
    url: SafeStr | None = Field(default=None, max_length=MAX_URL)
    data_base64: str | None = None
    mimetype: SafeStr | None = Field(default=None, max_length=128)
    filename: SafeStr | None = Field(default=None, max_length=MAX_FILENAME)
    caption: SafeStr | None = Field(default=None, max_length=4096)


class AddContact(ApiModel):
    phone: SafeStr = Field(max_length=64)
    name: SafeStr | None = Field(default=None, max_length=MAX_CONTACT_NAME)


class SaveContact(ApiModel):
    number: SafeStr = Field(max_length=64)
    name: SafeStr | None = Field(default=None, max_length=MAX_CONTACT_NAME)
    push_name: SafeStr | None = Field(default=None, max_length=MAX_CONTACT_NAME)
    is_group: bool = False
    profile_picture: SafeStr | None = Field(default=None, max_length=MAX_URL)
    about: SafeStr | None = Field(default=None, max_length=1024)


class Page(ApiModel):
    limit: int = Field(100, ge=1, le=1000)
    skip: int = Field(0, ge=0, le=MAX_SKIP)


class ListInstances(ApiModel):
    all_users: bool = Field(False, description="admin only: every user's instances")


Filter = Annotated[list[Annotated[SafeStr, Field(max_length=2048)]], Field(max_length=100)]
IsoTime = Annotated[SafeStr, Field(max_length=64, description="ISO 8601")]


class ActivityQuery(Page):
    actions: Filter | None = None
    start_date: IsoTime | None = None
    end_date: IsoTime | None = None


class EventsQuery(ApiModel):
    since: IsoTime | None = None
    limit: int = Field(20, ge=1, le=1000)
    types: Filter | None = None


class ContactsQuery(Page):
    search: SafeStr | None = Field(default=None, max_length=256)
    only_groups: bool = False


class ChatMessagesQuery(Page):
    chat_id: SafeStr = Field(
        max_length=128, description="a JID, or digits (mapped to <digits>@s.whatsapp.net)"
    )
    limit: int = Field(50, ge=1, le=1000)
    start_date: IsoTime | None = None
    end_date: IsoTime | None = None


def payload(model: ApiModel) -> dict[str, Any]:
    """The request payload dict of a payload model (camelCase, JSON-ready)."""
    return model.model_dump(by_alias=True, mode="json")
