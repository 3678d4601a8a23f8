"""Records → the reference's response bodies (``spec/api-reference.md``), and small parsers.

Every body is a model of ``wa_common.schemas`` (``instances``, ``contacts``, ``messages``,
``cluster``): the gateway declares the same models as its routes' response models, so what the
worker answers is what ``/openapi.json`` documents, and a field the model does not declare fails
here rather than reaching a client. A handler returns its model (the router answers it 200 with
the model's JSON; ``Reply.success(model, status=...)`` for another status); times are ISO 8601
UTC with milliseconds and a ``Z`` (``2023-01-01T00:00:00.000Z``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from wa_common.bus.router import RequestError
from wa_common.clock import from_unix
from wa_common.db import redact_url
from wa_common.jids import InvalidAddress, parse_group, parse_jid
from wa_common.schemas.cluster import ClusterWorker, ClusterWorkers, StoreStatus
from wa_common.schemas.contacts import (
    AddContactResult,
    AddedContact,
    DbContact,
    DbContactsPage,
    ImportResult,
    WhatsappContact,
    WhatsappContacts,
)
from wa_common.schemas.instances import (
    ActivityLog,
    ActivityPage,
    ConnectionStatus,
    EventsPage,
    Instance,
    InstanceDetail,
    InstanceEvent,
    InstanceList,
    InstanceListItem,
    InstanceState,
    InstanceUpdated,
    InstanceWebhookSettings,
    PairingCode,
    QrCode,
    QrGenerating,
    QrStatus,
    SuccessMessage,
)
from wa_common.schemas.messages import ChatMessage, ChatMessagesPage, MessageId
from wa_common.schemas.wire import Pagination, iso_or_none
from wa_session_worker.engines.base import WaContact
from wa_session_worker.repository.records import ActivityRec, ContactRec, EventRec, InstanceRec, MessageRec
from wa_session_worker.shards.leases import Lease, Member

iso = iso_or_none
"""``2023-01-01T00:00:00.000Z`` (``None`` kept), for times outside the bodies (event data)."""

QR_MESSAGES: dict[QrStatus, str] = {
    "generating": "QR code generation in progress. Please try again in a few seconds.",
    "logged_out": "The instance is logged out: reconnect it (POST .../reconnect) to get a new QR code.",
}


# --- parsers -------------------------------------------------------------------------------------


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601 (``Z`` or offset; a date alone means midnight UTC) → aware UTC; 400 otherwise."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RequestError(
            400, f"{field} is not an ISO 8601 date", [{"field": field, "message": "invalid date"}]
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _invalid(field: str, exc: InvalidAddress) -> RequestError:
    return RequestError(400, f"Invalid {field}: {exc}", [{"field": field, "message": str(exc)}])


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


# --- instances -----------------------------------------------------------------------------------


def connection_status(rec: InstanceRec) -> ConnectionStatus:
    """The reference's ``{ready, status, hasQr}`` plus two extensions: ``phone``, the linked
    number, and ``pushName``, the linked account's own name (each ``null`` when not linked or
    not known)."""
    linked = linked_phone(rec)
    return ConnectionStatus(
        ready=rec.status == "connected",
        status=rec.status,
        has_qr=bool(rec.qr_code) and rec.status == "qr",
        phone=linked,
        push_name=rec.push_name if linked else None,
    )


def instance_body(rec: InstanceRec) -> Instance:
    """The create response (also the base of get/list bodies)."""
    return Instance.model_validate(rec, from_attributes=True)


def webhook_settings_body(rec: InstanceRec) -> InstanceWebhookSettings:
    return InstanceWebhookSettings.model_validate({**rec.webhook_settings, "instanceId": rec.id})


def instance_detail(rec: InstanceRec) -> InstanceDetail:
    return InstanceDetail(
        **dict(instance_body(rec)),
        webhook_settings=webhook_settings_body(rec),
        connection_status=connection_status(rec),
    )


def instance_list_item(rec: InstanceRec) -> InstanceListItem:
    return InstanceListItem(**dict(instance_body(rec)), connection_status=connection_status(rec))


def instance_list(recs: Iterable[InstanceRec]) -> InstanceList:
    return InstanceList(instances=[instance_list_item(r) for r in recs])


def instance_update_body(rec: InstanceRec) -> InstanceUpdated:
    return InstanceUpdated.model_validate(rec, from_attributes=True)


def status_body(rec: InstanceRec) -> InstanceState:
    conn = connection_status(rec)
    return InstanceState(
        instance_id=rec.id,
        status=rec.status,
        ready=conn.ready,
        has_qr=conn.has_qr,
        last_activity=rec.last_activity_at or rec.updated_at,
        connection_details=conn,
    )


def deleted(instance_id: str) -> SuccessMessage:
    return SuccessMessage(success=True, message=f"Instance {instance_id} deleted successfully")


def reconnected(instance_id: str) -> SuccessMessage:
    return SuccessMessage(success=True, message=f"Instance {instance_id} reconnected")


def logged_out(instance_id: str) -> SuccessMessage:
    return SuccessMessage(success=True, message=f"Instance {instance_id} logged out")


def qr_code(rec: InstanceRec) -> QrCode:
    """200 of ``GET .../qr``: the instance's current code and when it expires."""
    assert rec.qr_code is not None
    return QrCode(qr_code=rec.qr_code, expires_at=rec.qr_expires_at)


def qr_pending(status: QrStatus, message: str | None = None) -> QrGenerating:
    """202 of ``GET .../qr``: no code now (``message`` defaults to :data:`QR_MESSAGES`)."""
    return QrGenerating(message=message or QR_MESSAGES[status], status=status)


def pairing_code(code: str) -> PairingCode:
    return PairingCode(pairing_code=code)


def activity_body(rec: ActivityRec) -> ActivityLog:
    return ActivityLog.model_validate(rec, from_attributes=True)


def activity_page(recs: Iterable[ActivityRec], total: int, limit: int, skip: int) -> ActivityPage:
    return ActivityPage(logs=[activity_body(r) for r in recs], pagination=pagination(total, limit, skip))


def event_body(rec: EventRec) -> InstanceEvent:
    """One event of the feed. A message event's data carries ``from`` (received: the sender) or
    ``to`` (sent: the recipient) as the webhook payloads do; rows stored before those fields
    existed get them from ``remoteJid``, except a group message's sender, which is not known."""
    data = rec.data
    chat = data.get("remoteJid")
    if rec.type in ("message_received", "message_sent") and isinstance(chat, str):
        key = "from" if rec.type == "message_received" else "to"
        if key not in data and (key == "to" or not chat.endswith("@g.us")):
            data = {**data, key: chat}
    return InstanceEvent(type=rec.type, timestamp=rec.occurred_at, data=data)


def events_page(recs: Sequence[EventRec], latest: datetime | None, more: bool) -> EventsPage:
    """The feed's page: ``recs`` newest first, ``latest`` the time to pass back as ``since``."""
    return EventsPage(
        events=[event_body(r) for r in recs], latest_timestamp=latest, count=len(recs), has_more=more
    )


def pagination(total: int, limit: int, skip: int) -> Pagination:
    return Pagination.of(total, limit, skip)


# --- messages ------------------------------------------------------------------------------------


def message_id(whatsapp_id: str) -> MessageId:
    """The answer of a send: the WhatsApp message id."""
    return MessageId(id=whatsapp_id)


def message_body(rec: MessageRec) -> ChatMessage:
    return ChatMessage.model_validate(rec, from_attributes=True)


def messages_page(recs: Iterable[MessageRec], total: int, limit: int, skip: int) -> ChatMessagesPage:
    return ChatMessagesPage(
        messages=[message_body(r) for r in recs], pagination=pagination(total, limit, skip)
    )


# --- contacts ------------------------------------------------------------------------------------


def contact_body(rec: ContactRec) -> DbContact:
    return DbContact.model_validate(rec, from_attributes=True)


def contacts_page(recs: Iterable[ContactRec], total: int, limit: int, skip: int) -> DbContactsPage:
    return DbContactsPage(contacts=[contact_body(r) for r in recs], pagination=pagination(total, limit, skip))


def whatsapp_contacts(contacts: Iterable[WaContact]) -> WhatsappContacts:
    """The live session's contacts and groups."""
    return WhatsappContacts(
        contacts=[
            WhatsappContact(
                id=c.jid, name=c.name or c.push_name, number=c.jid.split("@", 1)[0], is_group=c.is_group
            )
            for c in contacts
        ]
    )


def contact_added(jid: str, number: str, name: str | None) -> AddContactResult:
    return AddContactResult(
        success=True,
        message="Contact successfully added",
        contact=AddedContact(id=jid, number=number, name=name),
    )


def imported(count: int) -> ImportResult:
    return ImportResult(success=True, message=f"Successfully imported {count} contacts", imported_count=count)


# --- administration ------------------------------------------------------------------------------


def cluster(
    shard_count: int, members: Iterable[Member], leases: Iterable[Lease], *, now: float, lease_ttl_s: float
) -> ClusterWorkers:
    """The cluster at ``now`` (Unix seconds): each member with the shards whose unexpired lease
    it holds (``alive``: heartbeat within ``lease_ttl_s``), the shards nobody holds, each shard's
    lease epoch."""
    ordered = sorted(leases, key=lambda item: item.shard)
    owned: dict[str, list[int]] = {}
    unowned: list[int] = []
    for lease in ordered:
        if lease.owner is not None and lease.expires_at >= now:
            owned.setdefault(lease.owner, []).append(lease.shard)
        else:
            unowned.append(lease.shard)
    workers = [
        ClusterWorker(
            id=m.id,
            host=m.host,
            port=m.port,
            alive=m.heartbeat_at >= now - lease_ttl_s,
            shards=owned.get(m.id, []),
            sessions=m.sessions,
            started_at=from_unix(m.started_at),
            heartbeat_at=from_unix(m.heartbeat_at),
        )
        for m in members
    ]
    return ClusterWorkers(
        shard_count=shard_count,
        workers=workers,
        unowned_shards=unowned,
        epochs={str(lease.shard): lease.epoch for lease in ordered},
    )


def store_status(provider: str, store_url: str) -> StoreStatus:
    """The ``store.status`` answer: the provider and the store URL without credentials."""
    if "://" in store_url and not store_url.startswith("mongodb"):
        url = redact_url(store_url)
    else:
        scheme, sep, rest = store_url.partition("://")
        url = f"{scheme}://{rest.rpartition('@')[2]}" if sep else store_url
    return StoreStatus(provider=provider, url=url)
