"""Response bodies of the contact routes (reference, "Contacts"): built by the session worker,
declared and validated by the gateway (see ``wa_common.schemas.instances``)."""

from __future__ import annotations

from pydantic import Field

from wa_common.schemas.wire import ApiModel, Pagination, UtcDateTime


class WhatsappContact(ApiModel):
    """A contact or group as the live WhatsApp session knows it."""

    id: str = Field(examples=["79001234567@s.whatsapp.net"])
    name: str | None = None
    number: str | None = None
    is_group: bool = False


class WhatsappContacts(ApiModel):
    """``GET .../contacts``."""

    contacts: list[WhatsappContact]


class AddedContact(ApiModel):
    id: str
    number: str
    name: str | None = None


class AddContactResult(ApiModel):
    """``POST .../contacts/add``."""

    success: bool
    message: str
    contact: AddedContact


class DbContact(ApiModel):
    """A stored contact (``GET .../contacts/db``, ``POST .../contacts/save``)."""

    id: str
    instance_id: str
    name: str | None = None
    number: str
    remote_jid: str
    push_name: str | None = None
    is_group: bool
    profile_picture: str | None = None
    about: str | None = None
    last_activity: UtcDateTime | None = None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class DbContactsPage(ApiModel):
    contacts: list[DbContact]
    pagination: Pagination


class ImportResult(ApiModel):
    """``POST .../contacts/import``."""

    success: bool
    message: str = Field(examples=["Successfully imported 25 contacts"])
    imported_count: int
