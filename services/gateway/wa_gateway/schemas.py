"""Request bodies of the public REST API (camelCase, as the reference ``spec/api-reference.md``
shows them), with the examples ``/openapi.json`` shows.

Response bodies are not here: they are the models the services build their replies with
(``wa_common.schemas.instances``, ``contacts``, ``messages``, ``cluster``, ``stats``,
``webhooks``), declared as the routes' response models and validated on the way out.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wa_common.schemas.session import MAX_URL, AddContact, CreateInstance, SaveContact, UpdateInstance
from wa_common.schemas.stats import MAX_LIMIT

# --- common --------------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


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


class PairingCodeBody(_In):
    phone: str = Field(
        max_length=64,
        description="the phone number of the WhatsApp account to link, international format",
        examples=["79001234567"],
    )


# --- WhatsApp API ----------------------------------------------------------------------------------


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


class AddContactBody(AddContact):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={"examples": [{"phone": "79001234567", "name": "John Doe"}]},
    )


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


# --- statistics and limits ---------------------------------------------------------------------------


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


# --- database ----------------------------------------------------------------------------


class DbSwitchBody(_In):
    provider: str = Field(max_length=64, examples=["mongodb"])
