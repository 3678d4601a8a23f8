"""Wire schemas of the public REST API: request bodies and response bodies (camelCase, as the
reference ``spec/api-reference.md`` shows them).

Response models document the bodies in ``/openapi.json``; the gateway relays the worker's reply
data (which is exactly the reference's body) without re-shaping it, so these models allow extra
properties and mark as nullable every field the reference shows as ``null``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wa_common.schemas.session import MAX_URL, AddContact, CreateInstance, SaveContact, UpdateInstance
from wa_common.schemas.stats import MAX_LIMIT

# --- common --------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FieldError(_Out):
    field: str = Field(description="dotted path of the offending field, e.g. `phone` or `limit`")
    message: str


class ErrorBody(_Out):
    """Every failure: a human-readable ``error``; ``details`` for validation failures."""

    error: str = Field(examples=["Instance not found"])
    details: list[FieldError] | None = None


class Pagination(_Out):
    total: int = Field(examples=[150])
    limit: int = Field(examples=[100])
    skip: int = Field(examples=[0])
    hasMore: bool = Field(examples=[True])


class SuccessMessage(_Out):
    success: bool = Field(examples=[True])
    message: str | None = Field(default=None, examples=["Instance 01J... deleted successfully"])


class MessageId(_Out):
    """Answer of every send: the WhatsApp message id."""

    id: str = Field(examples=["3EB0C767D26A1D6F9A42"])


# --- instances -----------------------------------------------------------------------------------


class CreateInstanceBody(CreateInstance):
    """``POST /api/instances``. ``retryInterval`` in milliseconds."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Primary WhatsApp",
                    "description": "Corporate account",
                    "webhookUrl": "https://example.com/webhook",
                    "webhookEnabled": True,
                    "notifyReceived": True,
                    "notifySent": True,
                    "notifyDelivery": False,
                    "notifyRead": False,
                    "maxRetries": 3,
                    "retryInterval": 60000,
                    "webhookSecret": "optional-secret-key",
                    "headers": {"Custom-Header": "custom-value"},
                }
            ]
        },
    )


class UpdateInstanceBody(UpdateInstance):
    """``PUT /api/instances/{instanceId}``; absent fields are left unchanged."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "New WhatsApp Name",
                    "description": "Updated description",
                    "webhookUrl": "https://new-example.com/webhook",
                    "webhookEnabled": True,
                    "webhookSettings": {
                        "notifyReceived": True,
                        "notifySent": False,
                        "notifyDelivery": True,
                        "notifyRead": True,
                        "maxRetries": 5,
                        "retryInterval": 30000,
                        "secret": "new-secret-key",
                        "headers": {"New-Custom-Header": "new-value"},
                    },
                }
            ]
        },
    )


class ConnectionStatus(_Out):
    ready: bool
    status: str = Field(
        examples=["connected"],
        description="`connecting`, `qr` (waiting for a scan), `connected`, `disconnected` or `logged_out`",
    )
    hasQr: bool
    phone: str | None = Field(
        default=None,
        description="extension: the linked account's number (international, no `+`) once connected",
        examples=["79001234567"],
    )
    pushName: str | None = Field(
        default=None,
        description="extension: the linked account's WhatsApp display name, when known",
        examples=["John"],
    )


class InstanceOut(_Out):
    """An instance as ``POST /api/instances`` (201) answers it."""

    id: str = Field(examples=["01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"])
    name: str = Field(examples=["Primary WhatsApp"])
    description: str | None = None
    userId: str | None = None
    status: str = Field(examples=["connecting"])
    webhookUrl: str | None = None
    webhookEnabled: bool = False
    createdAt: str = Field(examples=["2023-01-01T00:00:00.000Z"])
    updatedAt: str = Field(examples=["2023-01-01T00:00:00.000Z"])


class InstanceListItem(InstanceOut):
    connectionStatus: ConnectionStatus | None = None


class InstanceList(_Out):
    instances: list[InstanceListItem]


class WebhookSettingsOut(_Out):
    instanceId: str | None = None
    notifyReceived: bool
    notifySent: bool
    notifyDelivery: bool
    notifyRead: bool
    maxRetries: int
    retryInterval: int = Field(description="milliseconds")
    secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class InstanceDetail(InstanceOut):
    webhookSettings: WebhookSettingsOut | None = None
    connectionStatus: ConnectionStatus


class InstanceUpdated(_Out):
    id: str
    name: str
    description: str | None = None
    webhookUrl: str | None = None
    webhookEnabled: bool
    updatedAt: str


class InstanceStatus(_Out):
    instanceId: str
    status: str = Field(examples=["connected"])
    ready: bool
    hasQr: bool
    lastActivity: str | None = Field(default=None, examples=["2023-01-01T12:00:00.000Z"])
    connectionDetails: ConnectionStatus


class QrCode(_Out):
    """200: the raw pairing string (render it as a QR image), and with ``?format=`` an image."""

    qrCode: str = Field(examples=["2@AbC...,noiseKeyB64,identityKeyB64,advSecretB64"])
    expiresAt: str | None = Field(
        default=None,
        description="extension: when WhatsApp stops accepting this code (ISO 8601 UTC); a new code "
        "follows (`qr_received`). Null when unknown",
        examples=["2023-01-01T12:00:20.000Z"],
    )


class QrGenerating(_Out):
    """202: no QR code now. ``generating``: the session waits for one, ask again in a few
    seconds. ``logged_out``: the instance is logged out: reconnect it
    (``POST .../reconnect``) to get a new code."""

    message: str = Field(examples=["QR code generation in progress. Please try again in a few seconds."])
    status: Literal["generating", "logged_out"] = Field(
        default="generating",
        description="`generating` (ask again in a few seconds) or `logged_out` (the instance is logged "
        "out: reconnect it to get a new code)",
    )


class PairingCodeBody(_In):
    phone: str = Field(
        max_length=64,
        description="the phone number of the WhatsApp account to link, international format",
        examples=["79001234567"],
    )


class PairingCode(_Out):
    pairingCode: str = Field(examples=["ABCD-EFGH"])


class ActivityLog(_Out):
    id: str
    instanceId: str
    action: str = Field(examples=["connected"])
    details: dict[str, Any] | None = None
    createdAt: str


class ActivityPage(_Out):
    logs: list[ActivityLog]
    pagination: Pagination


class InstanceEvent(_Out):
    type: str = Field(examples=["message_received"])
    timestamp: str
    data: dict[str, Any]


class EventsPage(_Out):
    events: list[InstanceEvent]
    latestTimestamp: str | None = None
    count: int
    hasMore: bool


# --- WhatsApp API ----------------------------------------------------------------------------------


class WhatsappStatus(_Out):
    ready: bool
    status: str = Field(examples=["connected"])
    hasQr: bool


class SendTextBody(_In):
    phone: str = Field(
        max_length=128,
        description="recipient: international number (digits, `+` and separators allowed) or a JID "
        "(`<digits>@s.whatsapp.net`, `<id>@g.us`)",
        examples=["79001234567"],
    )
    message: str = Field(min_length=1, max_length=65536, examples=["Hi! How are you?"])


class SendMediaBody(_In):
    phone: str = Field(max_length=128, examples=["79001234567"])
    url: str = Field(
        min_length=1,
        max_length=MAX_URL,
        description="http(s) URL the worker downloads",
        examples=["https://example.com/image.jpg"],
    )
    caption: str | None = Field(default=None, max_length=4096, examples=["Image description"])
    filename: str | None = Field(default=None, max_length=255, examples=["image.jpg"])


class WhatsappContact(_Out):
    id: str = Field(examples=["79001234567@s.whatsapp.net"])
    name: str | None = None
    number: str | None = None
    isGroup: bool = False


class WhatsappContacts(_Out):
    contacts: list[WhatsappContact]


class AddContactBody(AddContact):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={"examples": [{"phone": "79001234567", "name": "John Doe"}]},
    )


class AddedContact(_Out):
    id: str
    number: str
    name: str | None = None


class AddContactResult(_Out):
    success: bool
    message: str
    contact: AddedContact


class SaveContactBody(SaveContact):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "number": "79001234567",
                    "name": "John Doe",
                    "pushName": "John",
                    "isGroup": False,
                    "profilePicture": "url-to-picture",
                    "about": "User status",
                }
            ]
        },
    )


class DbContact(_Out):
    id: str
    instanceId: str
    name: str | None = None
    number: str
    remoteJid: str
    pushName: str | None = None
    isGroup: bool
    profilePicture: str | None = None
    about: str | None = None
    lastActivity: str | None = None
    createdAt: str
    updatedAt: str


class DbContactsPage(_Out):
    contacts: list[DbContact]
    pagination: Pagination


class ImportResult(_Out):
    success: bool
    message: str = Field(examples=["Successfully imported 25 contacts"])
    importedCount: int


class ChatMessage(_Out):
    id: str
    instanceId: str
    remoteJid: str
    fromMe: bool
    messageType: str
    content: str | None = None
    messageId: str
    hasMedia: bool
    mediaUrl: str | None = None
    caption: str | None = None
    mimeType: str | None = None
    fileName: str | None = None
    status: str
    metadata: dict[str, Any] | None = None
    createdAt: str
    updatedAt: str
    statusUpdatedAt: str | None = None


class ChatMessagesPage(_Out):
    messages: list[ChatMessage]
    pagination: Pagination


# --- statistics and limits ---------------------------------------------------------------------------


class UsageCounters(_Out):
    messagesSent: int = 0
    messagesReceived: int = 0
    mediaSent: int = 0
    mediaReceived: int = 0
    totalMediaSize: int = Field(0, description="bytes")
    apiCalls: int = 0
    webhookSent: int = 0


class UserTotals(UsageCounters):
    instanceCount: int = 0


class InstanceUsageRow(UsageCounters):
    instanceId: str
    name: str | None = None


class UserStats(_Out):
    total: UserTotals
    instances: list[InstanceUsageRow]


class DailyStats(_Out):
    date: str
    messagesSent: int = 0
    messagesReceived: int = 0
    mediaSent: int = 0
    mediaReceived: int = 0


class InstanceUsage(UsageCounters):
    dailyStats: list[DailyStats] = Field(default_factory=list)


class InstanceStats(_Out):
    usage: InstanceUsage


class TotalActive(_Out):
    total: int
    active: int


class SystemStats(_Out):
    instances: TotalActive
    users: TotalActive
    usage: UsageCounters


class LimitValues(_Out):
    """A user's limits (``null`` = unlimited): messages and API calls per UTC day, instances at once."""

    maxMessagesSent: int | None = None
    maxApiCalls: int | None = None
    maxInstances: int | None = None


class LimitBlock(_Out):
    userId: str
    limit: str = Field(examples=["maxMessagesSent"])
    max: int
    usage: int
    resetsAt: str | None = Field(default=None, description="ISO 8601 UTC; null for maxInstances")


class UserLimitsOut(_Out):
    userId: str
    limits: LimitValues
    state: list[LimitBlock] = Field(default_factory=list, description="blocks in force now")


class UserLimitsBody(_In):
    maxMessagesSent: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="messages per UTC day; null = unlimited"
    )
    maxApiCalls: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="API calls per UTC day; null = unlimited"
    )
    maxInstances: int | None = Field(
        default=None, ge=0, le=MAX_LIMIT, description="instances at once; null = unlimited"
    )


# --- database, admin, webhooks, simulator ------------------------------------------------------------


class StoreStatus(_Out):
    provider: str = Field(examples=["postgresql"])
    url: str = Field(
        description="the store URL with credentials removed", examples=["postgresql://db:5432/wa"]
    )


class DbStatus(StoreStatus):
    """The session worker's store at the top level (as the reference shows), every service's
    store in ``services``."""

    services: dict[str, StoreStatus | None] = Field(
        default_factory=dict, description="service name → its store (null when it did not answer)"
    )


class DbSwitchBody(_In):
    provider: str = Field(max_length=64, examples=["mongodb"])


class ClusterWorkers(_Out):
    workers: list[dict[str, Any]] = Field(
        description="each worker: id, shards it holds, sessions it runs, last heartbeat"
    )


class DeliveryAttempt(_Out):
    number: int
    at: str = Field(description="ISO 8601 UTC")
    durationMs: int
    statusCode: int | None = None
    outcome: str = Field(examples=["2xx"])
    error: str | None = None


class WebhookDelivery(_Out):
    """One event to the instance's URL and its attempts (times ISO 8601 UTC)."""

    id: str
    instanceId: str
    eventId: str
    event: str = Field(examples=["message_received"])
    url: str | None = None
    status: str = Field(examples=["delivered"], description="pending, delivered, failed or cancelled")
    attemptCount: int
    maxRetries: int
    createdAt: str
    nextAttemptAt: str | None = None
    finishedAt: str | None = None
    lastStatusCode: int | None = None
    lastError: str | None = None
    redeliveryOf: str | None = None
    attempts: list[DeliveryAttempt] = Field(default_factory=list)


class DeliveryPage(_Out):
    deliveries: list[WebhookDelivery]
    pagination: Pagination


class DeliveryAccepted(_Out):
    success: bool
    message: str
    delivery: WebhookDelivery
