"""Event types and the payload (``data``) of each, as the API reference's Webhooks section shows.

Webhook-visible events use the reference's names (``message_received``...). Internal events use
dotted names (``instance.created``...) and never reach webhook receivers. Payload models use the
reference's camelCase field names (:class:`~wa_common.schemas.wire.ApiModel`); build
``Event.data`` with ``model.dump()``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from wa_common.schemas.wire import ApiModel


class EventType(StrEnum):
    # Webhook-visible (reference, "Event Types").
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_SENT = "message_sent"
    MESSAGE_STATUS = "message_status"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    QR_RECEIVED = "qr_received"
    LIMIT_EXCEEDED = "limit_exceeded"
    WEBHOOK_UPDATED = "webhook_updated"
    # Internal.
    INSTANCE_CREATED = "instance.created"
    INSTANCE_UPDATED = "instance.updated"
    INSTANCE_DELETED = "instance.deleted"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    API_KEY_ROTATED = "api_key.rotated"
    API_USAGE = "usage.api_calls"
    WEBHOOK_DELIVERED = "webhook.delivered"
    WEBHOOK_FAILED = "webhook.failed"


WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(
    {
        EventType.MESSAGE_RECEIVED,
        EventType.MESSAGE_SENT,
        EventType.MESSAGE_STATUS,
        EventType.CONNECTED,
        EventType.DISCONNECTED,
        EventType.QR_RECEIVED,
        EventType.LIMIT_EXCEEDED,
        EventType.WEBHOOK_UPDATED,
    }
)

# Older names accepted as filter values (contract notes, "Naming variants").
EVENT_NAME_ALIASES: dict[str, str] = {
    "connection_opened": EventType.CONNECTED,
    "connection_closed": EventType.DISCONNECTED,
}


class MessageReceivedData(ApiModel):
    instance_id: str
    message_id: str
    from_: str = Field(alias="from", description="sender JID, e.g. 79001234567@s.whatsapp.net")
    body: str
    type: str = Field(description="WhatsApp message type: conversation, image, video, audio, document...")
    timestamp: int = Field(description="Unix seconds")
    has_media: bool
    push_name: str | None = None


class MessageSentData(ApiModel):
    instance_id: str
    message_id: str
    to: str = Field(description="recipient JID")
    body: str
    type: str = Field(description="text, image, video, audio, document")
    timestamp: int = Field(description="Unix seconds")
    has_media: bool


MessageStatusValue = Literal["sent", "delivered", "read", "played", "failed"]


class MessageStatusData(ApiModel):
    instance_id: str
    message_id: str
    status: MessageStatusValue
    from_: str = Field(alias="from", description="JID of the chat the receipt came from")
    from_me: bool


class ConnectedData(ApiModel):
    instance_id: str


class DisconnectedData(ApiModel):
    instance_id: str
    reason: str
    will_reconnect: bool


class QrReceivedData(ApiModel):
    instance_id: str
    qr_code: str


class LimitExceededData(ApiModel):
    instance_id: str | None = None
    exceeded_limits: list[str]
    usage: dict[str, int]


class WebhookUpdatedData(ApiModel):
    instance_id: str
    timestamp: str = Field(description="ISO 8601 UTC")


# --- Internal event payloads ------------------------------------------------------------------


class WebhookSettings(ApiModel):
    """An instance's webhook settings as the reference's ``webhookSettings`` object shows them.

    ``retryInterval`` is in milliseconds. ``secret`` is the HMAC key (may be ``None``).
    """

    notify_received: bool = True
    notify_sent: bool = True
    notify_delivery: bool = False
    notify_read: bool = False
    max_retries: int = Field(3, ge=0, le=20)
    retry_interval: int = Field(60000, ge=1000, le=86_400_000)
    secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class InstanceSnapshot(ApiModel):
    """Data of ``instance.created`` / ``instance.updated``: what other services replicate.

    Published by the session worker (the owner of instances); the dispatcher keeps its copy of
    the webhook settings from it (event-carried state transfer) and stats keeps names.
    """

    instance_id: str
    user_id: str
    name: str
    webhook_url: str | None = None
    webhook_enabled: bool = False
    webhook_settings: WebhookSettings = Field(default_factory=WebhookSettings)
    updated_at: str = Field(description="ISO 8601 UTC; replicas keep the newest")


class InstanceDeletedData(ApiModel):
    instance_id: str
    user_id: str


class UserEventData(ApiModel):
    """Data of ``user.created``/``user.updated``/``user.deleted``/``api_key.rotated`` (from auth)."""

    user_id: str
    active: bool = True
    role: Literal["admin", "user"] = "user"


class ApiUsageCount(ApiModel):
    user_id: str
    instance_id: str | None = None
    count: int = Field(ge=1)


class ApiUsageBatch(ApiModel):
    """Data of ``usage.api_calls``: API calls a gateway replica counted in one interval.

    ``day`` is the UTC date (``YYYY-MM-DD``) the calls were made on. The envelope id makes a
    redelivered batch count once.
    """

    gateway: str
    day: str
    counts: list[ApiUsageCount]


class WebhookDeliveredData(ApiModel):
    """Data of ``webhook.delivered`` / ``webhook.failed`` (from the dispatcher, counted by stats)."""

    instance_id: str
    delivery_id: str
    event_id: str
    event: str
    attempts: int
