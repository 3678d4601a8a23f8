"""Response bodies of the instance routes (reference, "Instance Management" and the QR, pairing
code, status and logout routes of "WhatsApp API"): the session worker builds them
(``wa_session_worker.service.views``), the gateway declares them as its routes' response models
(validated on the way out, documented in ``/openapi.json``).

Times are :data:`~wa_common.schemas.wire.UtcDateTime` (``2023-01-01T00:00:00.000Z``); fields the
reference shows as ``null`` are nullable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from wa_common.schemas.events import WebhookSettings
from wa_common.schemas.wire import ApiModel, Pagination, UtcDateTime

TIME_EXAMPLE = "2023-01-01T00:00:00.000Z"


class SuccessMessage(ApiModel):
    """``{success, message}``: the answer of delete, reconnect and logout."""

    success: bool = Field(examples=[True])
    message: str | None = Field(default=None, examples=["Instance 01J... deleted successfully"])


class WhatsappStatus(ApiModel):
    """``GET /api/whatsapp/{instanceId}/status``: the session's short state."""

    ready: bool
    status: str = Field(
        examples=["connected"],
        description="`connecting`, `qr` (waiting for a scan), `connected`, `disconnected` or `logged_out`",
    )
    has_qr: bool


class ConnectionStatus(WhatsappStatus):
    """The reference's ``{ready, status, hasQr}`` and two extensions naming the linked account."""

    phone: str | None = Field(
        default=None,
        description="extension: the linked account's number (international, no `+`) once connected",
        examples=["79001234567"],
    )
    push_name: str | None = Field(
        default=None,
        description="extension: the linked account's WhatsApp display name, when known",
        examples=["John"],
    )


class Instance(ApiModel):
    """An instance as ``POST /api/instances`` (201) answers it; the list and detail bodies add
    to it."""

    id: str = Field(examples=["01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"])
    name: str = Field(examples=["Primary WhatsApp"])
    description: str | None = None
    user_id: str | None = None
    status: str = Field(examples=["connecting"])
    webhook_url: str | None = None
    webhook_enabled: bool = False
    created_at: UtcDateTime = Field(examples=[TIME_EXAMPLE])
    updated_at: UtcDateTime = Field(examples=[TIME_EXAMPLE])


class InstanceListItem(Instance):
    connection_status: ConnectionStatus | None = None


class InstanceList(ApiModel):
    """``GET /api/instances``."""

    instances: list[InstanceListItem]


class _OfInstance(ApiModel):
    instance_id: str | None = None


# ``_OfInstance`` is the last base, so ``instanceId`` comes first on the wire.
class InstanceWebhookSettings(WebhookSettings, _OfInstance):
    """An instance's ``webhookSettings`` with its ``instanceId``."""

    retry_interval: int = Field(60000, description="milliseconds")


class InstanceDetail(Instance):
    """``GET /api/instances/{instanceId}``."""

    webhook_settings: InstanceWebhookSettings | None = None
    connection_status: ConnectionStatus


class InstanceUpdated(ApiModel):
    """``PUT /api/instances/{instanceId}``."""

    id: str
    name: str
    description: str | None = None
    webhook_url: str | None = None
    webhook_enabled: bool
    updated_at: UtcDateTime


class InstanceState(ApiModel):
    """``GET /api/instances/{instanceId}/status``: the connection state in detail."""

    instance_id: str
    status: str = Field(examples=["connected"])
    ready: bool
    has_qr: bool
    last_activity: UtcDateTime | None = Field(default=None, examples=["2023-01-01T12:00:00.000Z"])
    connection_details: ConnectionStatus


class QrCode(ApiModel):
    """200: the raw pairing string (render it as a QR image), and with ``?format=`` an image."""

    qr_code: str = Field(examples=["2@AbC...,noiseKeyB64,identityKeyB64,advSecretB64"])
    expires_at: UtcDateTime | None = Field(
        default=None,
        description="extension: when WhatsApp stops accepting this code (ISO 8601 UTC); a new code "
        "follows (`qr_received`). Null when unknown",
        examples=["2023-01-01T12:00:20.000Z"],
    )


QrStatus = Literal["generating", "logged_out"]


class QrGenerating(ApiModel):
    """202: no QR code now. ``generating``: the session waits for one, ask again in a few
    seconds. ``logged_out``: the instance is logged out: reconnect it
    (``POST .../reconnect``) to get a new code."""

    message: str = Field(examples=["QR code generation in progress. Please try again in a few seconds."])
    status: QrStatus = Field(
        default="generating",
        description="`generating` (ask again in a few seconds) or `logged_out` (the instance is logged "
        "out: reconnect it to get a new code)",
    )


class PairingCode(ApiModel):
    pairing_code: str = Field(examples=["ABCD-EFGH"])


class ActivityLog(ApiModel):
    id: str
    instance_id: str
    action: str = Field(examples=["connected"])
    details: dict[str, Any] | None = None
    created_at: UtcDateTime


class ActivityPage(ApiModel):
    """``GET /api/instances/{instanceId}/activity``, newest first."""

    logs: list[ActivityLog]
    pagination: Pagination


class InstanceEvent(ApiModel):
    type: str = Field(examples=["message_received"])
    timestamp: UtcDateTime
    data: dict[str, Any]


class EventsPage(ApiModel):
    """``GET /api/instances/{instanceId}/events``, newest first."""

    events: list[InstanceEvent]
    latest_timestamp: UtcDateTime | None = None
    count: int
    has_more: bool
