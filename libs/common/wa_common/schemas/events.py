"""Event types and the payload (``data``) of each, as the API reference's Webhooks section shows.

Webhook-visible events use the reference's names (``message_received``...). Internal events use
dotted names (``instance.created``...) and never reach webhook receivers. Payload models use the
reference's camelCase field names; build ``Event.data`` with ``model.model_dump(by_alias=True)``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class _Data(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The reference's JSON object for this payload (camelCase keys)."""
        return self.model_dump(by_alias=True)


class MessageReceivedData(_Data):
    instance_id: str = Field(alias="instanceId")
    message_id: str = Field(alias="messageId")
    from_: str = Field(alias="from", description="sender JID, e.g. 79001234567@s.whatsapp.net")
    body: str
    type: str = Field(description="WhatsApp message type: conversation, image, video, audio, document...")
    timestamp: int = Field(description="Unix seconds")
    has_media: bool = Field(alias="hasMedia")
    push_name: str | None = Field(default=None, alias="pushName")


class MessageSentData(_Data):
    instance_id: str = Field(alias="instanceId")
    message_id: str = Field(alias="messageId")
    to: str = Field(description="recipient JID")
    body: str
    type: str = Field(description="text, image, video, audio, document")
    timestamp: int = Field(description="Unix seconds")
    has_media: bool = Field(alias="hasMedia")


MessageStatusValue = Literal["sent", "delivered", "read", "played", "failed"]


class MessageStatusData(_Data):
    instance_id: str = Field(alias="instanceId")
    message_id: str = Field(alias="messageId")
    status: MessageStatusValue
    from_: str = Field(alias="from", description="JID of the chat the receipt came from")
    from_me: bool = Field(alias="fromMe")


class ConnectedData(_Data):
    instance_id: str = Field(alias="instanceId")


class DisconnectedData(_Data):
    instance_id: str = Field(alias="instanceId")
    reason: str
    will_reconnect: bool = Field(alias="willReconnect")


class QrReceivedData(_Data):
    instance_id: str = Field(alias="instanceId")
    qr_code: str = Field(alias="qrCode")


class LimitExceededData(_Data):
    instance_id: str | None = Field(default=None, alias="instanceId")
    exceeded_limits: list[str] = Field(alias="exceededLimits")
    usage: dict[str, int]


class WebhookUpdatedData(_Data):
    instance_id: str = Field(alias="instanceId")
    timestamp: str = Field(description="ISO 8601 UTC")


# --- Internal event payloads ------------------------------------------------------------------


class WebhookSettings(_Data):
    """An instance's webhook settings as the reference's ``webhookSettings`` object shows them.

    ``retryInterval`` is in milliseconds. ``secret`` is the HMAC key (may be ``None``).
    """

    notify_received: bool = Field(True, alias="notifyReceived")
    notify_sent: bool = Field(True, alias="notifySent")
    notify_delivery: bool = Field(False, alias="notifyDelivery")
    notify_read: bool = Field(False, alias="notifyRead")
    max_retries: int = Field(3, ge=0, le=20, alias="maxRetries")
    retry_interval: int = Field(60000, ge=1000, le=86_400_000, alias="retryInterval")
    secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class InstanceSnapshot(_Data):
    """Data of ``instance.created`` / ``instance.updated``: what other services replicate.

    Published by the session worker (the owner of instances); the dispatcher keeps its copy of
    the webhook settings from it (event-carried state transfer) and stats keeps names.
    """

    instance_id: str = Field(alias="instanceId")
    user_id: str = Field(alias="userId")
    name: str
    webhook_url: str | None = Field(default=None, alias="webhookUrl")
    webhook_enabled: bool = Field(False, alias="webhookEnabled")
    webhook_settings: WebhookSettings = Field(default_factory=WebhookSettings, alias="webhookSettings")
    updated_at: str = Field(alias="updatedAt", description="ISO 8601 UTC; replicas keep the newest")


class InstanceDeletedData(_Data):
    instance_id: str = Field(alias="instanceId")
    user_id: str = Field(alias="userId")


class UserEventData(_Data):
    """Data of ``user.created``/``user.updated``/``user.deleted``/``api_key.rotated`` (from auth)."""

    user_id: str = Field(alias="userId")
    active: bool = True
    role: Literal["admin", "user"] = "user"


class ApiUsageCount(_Data):
    user_id: str = Field(alias="userId")
    instance_id: str | None = Field(default=None, alias="instanceId")
    count: int = Field(ge=1)


class ApiUsageBatch(_Data):
    """Data of ``usage.api_calls``: API calls a gateway replica counted in one interval.

    ``day`` is the UTC date (``YYYY-MM-DD``) the calls were made on. The envelope id makes a
    redelivered batch count once.
    """

    gateway: str
    day: str
    counts: list[ApiUsageCount]


class WebhookDeliveredData(_Data):
    """Data of ``webhook.delivered`` / ``webhook.failed`` (from the dispatcher, counted by stats)."""

    instance_id: str = Field(alias="instanceId")
    delivery_id: str = Field(alias="deliveryId")
    event_id: str = Field(alias="eventId")
    event: str
    attempts: int
