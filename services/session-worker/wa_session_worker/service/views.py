"""Records → the reference's response bodies (``spec/api-reference.md``), and small parsers.

Timestamps in bodies are ISO 8601 UTC with milliseconds and a ``Z`` (``2023-01-01T00:00:00.000Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from wa_common.jids import InvalidAddress, parse_group, parse_jid
from wa_session_worker.repository.base import (
    ActivityRec,
    ContactRec,
    EventRec,
    InstanceRec,
    MessageRec,
)


class ApiError(Exception):
    """A request that fails with HTTP ``status`` and a human-readable message."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601 (``Z`` or offset; a date alone means midnight UTC) → aware UTC; 400 otherwise."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"{field} is not an ISO 8601 date", [{"field": field, "message": "invalid date"}]
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _invalid(field: str, exc: InvalidAddress) -> ApiError:
    return ApiError(400, f"Invalid {field}: {exc}", [{"field": field, "message": str(exc)}])


def to_jid(value: str, field: str = "phone", *, groups: bool = True, lids: bool = True) -> str:
    """A phone number or a JID → a JID (:func:`wa_common.jids.parse_jid`); 400 naming ``field``
    when it is neither. ``groups``/``lids`` false: ``@g.us``/``@lid`` JIDs are refused."""
    try:
        return str(parse_jid(value, groups=groups, lids=lids))
    except InvalidAddress as exc:
        raise _invalid(field, exc) from None


def to_group_jid(value: str, field: str) -> str:
    """A group id (``<digits>(-<digits>)``, with or without ``@g.us``) → its JID; 400 otherwise."""
    try:
        return str(parse_group(value))
    except InvalidAddress as exc:
        raise _invalid(field, exc) from None


def linked_phone(rec: InstanceRec) -> str | None:
    """The number the instance is linked as (digits of its device JID), ``None`` when unlinked."""
    if not rec.device_jid:
        return None
    return rec.device_jid.split("@", 1)[0].split(":", 1)[0] or None


def connection_status(rec: InstanceRec) -> dict[str, Any]:
    """The reference's ``{ready, status, hasQr}`` plus two extensions: ``phone``, the linked
    number, and ``pushName``, the linked account's own name (each ``null`` when not linked or
    not known)."""
    linked = linked_phone(rec)
    return {
        "ready": rec.status == "connected",
        "status": rec.status,
        "hasQr": bool(rec.qr_code) and rec.status == "qr",
        "phone": linked,
        "pushName": rec.push_name if linked else None,
    }


def instance_body(rec: InstanceRec) -> dict[str, Any]:
    """The create response (also the base of get/list bodies)."""
    return {
        "id": rec.id,
        "name": rec.name,
        "description": rec.description,
        "userId": rec.user_id,
        "status": rec.status,
        "webhookUrl": rec.webhook_url,
        "webhookEnabled": rec.webhook_enabled,
        "createdAt": iso(rec.created_at),
        "updatedAt": iso(rec.updated_at),
    }


def webhook_settings_body(rec: InstanceRec) -> dict[str, Any]:
    return {"instanceId": rec.id, **rec.webhook_settings}


def instance_detail(rec: InstanceRec) -> dict[str, Any]:
    return {
        **instance_body(rec),
        "webhookSettings": webhook_settings_body(rec),
        "connectionStatus": connection_status(rec),
    }


def instance_list_item(rec: InstanceRec) -> dict[str, Any]:
    return {**instance_body(rec), "connectionStatus": connection_status(rec)}


def instance_update_body(rec: InstanceRec) -> dict[str, Any]:
    return {
        "id": rec.id,
        "name": rec.name,
        "description": rec.description,
        "webhookUrl": rec.webhook_url,
        "webhookEnabled": rec.webhook_enabled,
        "updatedAt": iso(rec.updated_at),
    }


def status_body(rec: InstanceRec) -> dict[str, Any]:
    conn = connection_status(rec)
    return {
        "instanceId": rec.id,
        "status": rec.status,
        "ready": conn["ready"],
        "hasQr": conn["hasQr"],
        "lastActivity": iso(rec.last_activity_at or rec.updated_at),
        "connectionDetails": conn,
    }


def contact_body(rec: ContactRec) -> dict[str, Any]:
    return {
        "id": rec.id,
        "instanceId": rec.instance_id,
        "name": rec.name,
        "number": rec.number,
        "remoteJid": rec.remote_jid,
        "pushName": rec.push_name,
        "isGroup": rec.is_group,
        "profilePicture": rec.profile_picture,
        "about": rec.about,
        "lastActivity": iso(rec.last_activity),
        "createdAt": iso(rec.created_at),
        "updatedAt": iso(rec.updated_at),
    }


def message_body(rec: MessageRec) -> dict[str, Any]:
    return {
        "id": rec.id,
        "instanceId": rec.instance_id,
        "remoteJid": rec.remote_jid,
        "fromMe": rec.from_me,
        "messageType": rec.message_type,
        "content": rec.content,
        "messageId": rec.message_id,
        "hasMedia": rec.has_media,
        "mediaUrl": rec.media_url,
        "caption": rec.caption,
        "mimeType": rec.mime_type,
        "fileName": rec.file_name,
        "status": rec.status,
        "metadata": rec.metadata,
        "createdAt": iso(rec.created_at),
        "updatedAt": iso(rec.updated_at),
        "statusUpdatedAt": iso(rec.status_updated_at),
    }


def activity_body(rec: ActivityRec) -> dict[str, Any]:
    return {
        "id": rec.id,
        "instanceId": rec.instance_id,
        "action": rec.action,
        "details": rec.details,
        "createdAt": iso(rec.created_at),
    }


def event_body(rec: EventRec) -> dict[str, Any]:
    """One event of the feed. A message event's data carries ``from`` (received: the sender) or
    ``to`` (sent: the recipient) as the webhook payloads do; rows stored before those fields
    existed get them from ``remoteJid``, except a group message's sender, which is not known."""
    data = rec.data
    chat = data.get("remoteJid")
    if rec.type in ("message_received", "message_sent") and isinstance(chat, str):
        key = "from" if rec.type == "message_received" else "to"
        if key not in data and (key == "to" or not chat.endswith("@g.us")):
            data = {**data, key: chat}
    return {"type": rec.type, "timestamp": iso(rec.occurred_at), "data": data}


def pagination(total: int, limit: int, skip: int) -> dict[str, Any]:
    return {"total": total, "limit": limit, "skip": skip, "hasMore": skip + limit < total}
