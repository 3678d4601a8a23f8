"""Per-instance routes that exist in both path families, ``/api/instances/{instanceId}/...`` and
``/api/whatsapp/{instanceId}/...`` (reference, "WhatsApp API" and "Contacts"): QR code, pairing
code, sends, logout and contacts. Each handler is registered under both (:func:`shared`), with
the operation id ``<family>_<handler>``. ``/api/whatsapp/{instanceId}/status`` has its own short
shape (``{ready, status, hasQr}``); the long one is in ``instances.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from wa_common.schemas import Caller
from wa_common.schemas.contacts import (
    AddContactResult,
    DbContact,
    DbContactsPage,
    ImportResult,
    WhatsappContacts,
)
from wa_common.schemas.instances import (
    InstanceState,
    PairingCode,
    QrCode,
    QrGenerating,
    SuccessMessage,
    WhatsappStatus,
)
from wa_common.schemas.messages import MessageId
from wa_common.schemas.session import (
    ContactsQuery,
    SendMedia,
    SendText,
    SessionCommand,
    SessionQuery,
)
from wa_common.schemas.wire import iso_or_none
from wa_gateway import schemas as s
from wa_gateway.api.routing import CallerDep, Endpoint, IdempotencyKey, Skip, ask, forwards, relay
from wa_gateway.backend import answer, ensure_ok, reply_as
from wa_gateway.errors import ApiError, error_responses
from wa_gateway.limits import MAX_MESSAGES_SENT
from wa_gateway.phones import number_or_400, recipient_or_400
from wa_gateway.service import MAX_PAGE, b64, read_upload, render_qr
from wa_gateway.state import check_instance_id, gateway

COMMON = error_responses(400, 401, 404, 409, 429, 503)
LIVE_SESSION = error_responses(401, 404, 409, 429, 503)

QR_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The raw pairing string as JSON `{qrCode, expiresAt}` (`expiresAt`: ISO 8601 "
        "UTC, when WhatsApp stops accepting the code; null when unknown); with `?format=png` a PNG "
        "image, with `?format=svg` an SVG image of it, whose `ETag` names the code (equal for the "
        "same code) and `X-QR-Expires-At` carries `expiresAt`",
        "headers": {
            "ETag": {
                "description": "images only: the same value for the same code",
                "schema": {"type": "string"},
            },
            "X-QR-Expires-At": {
                "description": "images only: when the code expires (ISO 8601 UTC), when known",
                "schema": {"type": "string", "format": "date-time"},
            },
        },
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
        },
    },
    202: {
        "model": QrGenerating,
        "description": "No QR code now: `status` is `generating` (ask again in a few seconds) or "
        "`logged_out` (the instance is logged out: reconnect it to get a new code)",
    },
    **COMMON,
}

instances_family = APIRouter(prefix="/api/instances", tags=["Instances"])
whatsapp_family = APIRouter(prefix="/api/whatsapp", tags=["WhatsApp"])
FAMILIES = {"instances": instances_family, "whatsapp": whatsapp_family}


def shared(
    method: str,
    path: str,
    model: Any,
    summary: str,
    responses: dict[int | str, dict[str, Any]] = COMMON,
) -> Callable[[Endpoint], Endpoint]:
    """Register the decorated handler under ``path`` in both families, answering ``model`` (its
    response model) with the error ``responses``; operation id ``<family>_<handler name>``."""

    def register(endpoint: Endpoint) -> Endpoint:
        for op, router in FAMILIES.items():
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                response_model=model,
                responses=responses,
                summary=summary,
                operation_id=f"{op}_{endpoint.__name__}",
            )
        return endpoint

    return register


@whatsapp_family.get(
    "/{instanceId}/status",
    response_model=WhatsappStatus,
    responses=COMMON,
    summary="Connection status",
    operation_id="whatsapp_status",
)
async def status(request: Request, instanceId: str, caller: CallerDep) -> WhatsappStatus:
    """``{ready, status, hasQr}`` of the instance's WhatsApp session."""
    state = reply_as(InstanceState, await ask(request, SessionQuery.STATUS, caller, instanceId))
    return WhatsappStatus(ready=state.ready, status=state.status, has_qr=state.has_qr)


@shared("GET", "/{instanceId}/qr", QrCode | QrGenerating, "QR code", QR_RESPONSES)
async def qr(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    format: Annotated[
        Literal["png", "svg"] | None,
        Query(description="render the code: `png` (image/png) or `svg` (image/svg+xml); default JSON"),
    ] = None,
) -> Any:
    """**200** ``{qrCode, expiresAt}`` (the raw pairing string, to render as a QR image, and
    when it expires: ISO 8601 UTC, an extension; null when unknown) when a code is available;
    **202** ``{message, status}`` otherwise: ``status: "generating"`` while the session waits
    for one (ask again in a few seconds), ``status: "logged_out"`` when the instance is logged
    out (reconnect it to get a new code); **409** when it is already connected. With
    ``?format=png|svg`` a 200 answers the rendered image instead, with ``ETag`` (the same for
    the same code) and ``X-QR-Expires-At``."""
    reply = ensure_ok(await ask(request, SessionQuery.QR, caller, instanceId))
    if format is None or reply.status != 200:
        return answer(reply, response)
    code = reply_as(QrCode, reply)
    return render_qr(code.qr_code, format, iso_or_none(code.expires_at))


@shared("POST", "/{instanceId}/pairing-code", PairingCode, "Pairing code by phone number")
async def pairing_code(
    request: Request, response: Response, instanceId: str, body: s.PairingCodeBody, caller: CallerDep
) -> Any:
    """Link by phone number instead of QR: an 8-character code to enter on the phone
    (WhatsApp → Linked devices → Link with phone number)."""
    instance_id = check_instance_id(instanceId)
    phone = {"phone": number_or_400(body.phone)}
    return await relay(request, response, SessionCommand.PAIR_PHONE, caller, instance_id, phone)


def _sending(request: Request, caller: Caller) -> None:
    """429 when the caller's ``maxMessagesSent`` is used up (checked before anything else)."""
    gateway(request).limits.check(caller.user_id, MAX_MESSAGES_SENT)


@shared("POST", "/{instanceId}/send", MessageId, "Send text message")
async def send(
    request: Request,
    response: Response,
    instanceId: str,
    body: s.SendTextBody,
    caller: CallerDep,
    key: IdempotencyKey = None,
) -> Any:
    """Send a text; **200** ``{id}`` (WhatsApp message id). ``phone``: international number or
    JID. 409 when the instance is not connected; 429 when ``maxMessagesSent`` is reached."""
    _sending(request, caller)
    command = SendText(phone=recipient_or_400(body.phone), message=body.message)
    return await relay(request, response, SessionCommand.SEND_TEXT, caller, instanceId, command, key=key)


@shared("POST", "/{instanceId}/send-media", MessageId, "Send media by URL")
async def send_media(
    request: Request,
    response: Response,
    instanceId: str,
    body: s.SendMediaBody,
    caller: CallerDep,
    key: IdempotencyKey = None,
) -> Any:
    """Send media the worker downloads from ``url`` (size limit, timeout, private addresses
    refused); **200** ``{id}``."""
    _sending(request, caller)
    if not body.url.startswith(("http://", "https://")):
        msg = "must be an http:// or https:// URL"
        raise ApiError(400, f"Invalid url: {msg}", [{"field": "url", "message": msg}])
    command = SendMedia(
        phone=recipient_or_400(body.phone), url=body.url, caption=body.caption, filename=body.filename
    )
    return await relay(request, response, SessionCommand.SEND_MEDIA, caller, instanceId, command, key=key)


@shared(
    "POST",
    "/{instanceId}/send-file",
    MessageId,
    "Send media from an uploaded file",
    error_responses(400, 401, 404, 409, 413, 429, 503),
)
async def send_file(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    phone: Annotated[str, Form(description="recipient number or JID")],
    file: Annotated[UploadFile, File(description="the file to send (max GATEWAY_MAX_UPLOAD_BYTES)")],
    caption: Annotated[str | None, Form(max_length=4096)] = None,
    key: IdempotencyKey = None,
) -> Any:
    """``multipart/form-data`` with ``phone``, optional ``caption`` and ``file``; **200**
    ``{id}``. 413 above ``GATEWAY_MAX_UPLOAD_BYTES`` (16 MiB by default)."""
    _sending(request, caller)
    recipient = recipient_or_400(phone)
    instance_id = check_instance_id(instanceId)
    data, mimetype, filename = await read_upload(file, gateway(request).settings.max_upload_bytes)
    command = SendMedia(
        phone=recipient, data_base64=b64(data), mimetype=mimetype, filename=filename, caption=caption or None
    )
    del data
    return await relay(request, response, SessionCommand.SEND_MEDIA, caller, instance_id, command, key=key)


@shared("POST", "/{instanceId}/logout", SuccessMessage, "Log out of WhatsApp")
@forwards(SessionCommand.LOGOUT)
def logout() -> None:
    """Unlink the WhatsApp account (a new QR scan is needed afterwards); the instance stays."""


@shared("GET", "/{instanceId}/contacts", WhatsappContacts, "Contacts from WhatsApp", LIVE_SESSION)
@forwards(SessionCommand.FETCH_CONTACTS)
def contacts() -> None:
    """Contacts and groups as the live WhatsApp session knows them."""


@shared("POST", "/{instanceId}/contacts/add", AddContactResult, "Add contact to WhatsApp")
async def contacts_add(
    request: Request, response: Response, instanceId: str, body: s.AddContactBody, caller: CallerDep
) -> Any:
    """Add a contact by number (``phone``) with an optional ``name``."""
    command = body.model_copy(update={"phone": number_or_400(body.phone)})
    return await relay(request, response, SessionCommand.ADD_CONTACT, caller, instanceId, command)


@shared("GET", "/{instanceId}/contacts/db", DbContactsPage, "Contacts from the database")
async def contacts_db(
    request: Request,
    response: Response,
    instanceId: str,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="contacts (max 1000)")] = 100,
    skip: Skip = 0,
    search: Annotated[str | None, Query(max_length=200, description="in name or number")] = None,
    onlyGroups: Annotated[bool, Query(description="only groups")] = False,
) -> Any:
    """Stored contacts with ``pagination {total, limit, skip, hasMore}``."""
    query = ContactsQuery(limit=limit, skip=skip, search=search or None, only_groups=onlyGroups)
    return await relay(request, response, SessionQuery.CONTACTS_DB, caller, instanceId, query)


@shared(
    "POST",
    "/{instanceId}/contacts/import",
    ImportResult,
    "Import WhatsApp contacts into the database",
    LIVE_SESSION,
)
@forwards(SessionCommand.IMPORT_CONTACTS)
def contacts_import() -> None:
    """Copy the live session's contacts into the store; answers how many."""


@shared("POST", "/{instanceId}/contacts/save", DbContact, "Save or update a contact in the database")
async def contacts_save(
    request: Request, response: Response, instanceId: str, body: s.SaveContactBody, caller: CallerDep
) -> Any:
    """Create or update the stored contact for ``number`` (a number, or a group id when
    ``isGroup``)."""
    number = body.number if body.is_group else number_or_400(body.number, "number")
    command = body.model_copy(update={"number": number})
    return await relay(request, response, SessionCommand.SAVE_CONTACT, caller, instanceId, command)
