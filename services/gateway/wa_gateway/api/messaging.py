"""Per-instance routes that exist in both path families, ``/api/instances/{instanceId}/...`` and
``/api/whatsapp/{instanceId}/...`` (reference, "WhatsApp API" and "Contacts"): QR code, pairing
code, sends, logout and contacts. ``/api/whatsapp/{instanceId}/status`` has its own short shape
(``{ready, status, hasQr}``); the long one is in ``instances.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from starlette.responses import JSONResponse, Response

from wa_common.schemas import Caller
from wa_common.schemas.session import (
    MAX_SKIP,
    ContactsQuery,
    SendMedia,
    SendText,
    SessionCommand,
    SessionQuery,
    payload,
)
from wa_gateway import schemas as s
from wa_gateway.backend import ensure_ok, relay
from wa_gateway.errors import error_responses
from wa_gateway.limits import MAX_MESSAGES_SENT
from wa_gateway.phones import number_or_400, recipient_or_400
from wa_gateway.service import MAX_PAGE, b64, qr_response, read_upload
from wa_gateway.state import api_caller, check_instance_id, gateway

CallerDep = Annotated[Caller, Depends(api_caller)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="a retried send with the same key returns the first result instead of sending again",
    ),
]
COMMON = error_responses(400, 401, 404, 409, 429, 503)
SEND_ERRORS = error_responses(400, 401, 404, 409, 429, 503)

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
        "model": s.QrGenerating,
        "description": "No QR code now: `status` is `generating` (ask again in a few seconds) or "
        "`logged_out` (the instance is logged out: reconnect it to get a new code)",
    },
    **error_responses(400, 401, 404, 409, 429, 503),
}


def family(prefix: str, tag: str, *, short_status: bool) -> APIRouter:
    """The shared per-instance routes under ``prefix`` (``/api/instances`` or ``/api/whatsapp``)."""
    router = APIRouter(prefix=prefix, tags=[tag])
    op = prefix.rsplit("/", 1)[-1]

    if short_status:

        @router.get(
            "/{instanceId}/status",
            response_model=s.WhatsappStatus,
            responses=COMMON,
            summary="Connection status",
            operation_id=f"{op}_status",
        )
        async def status(request: Request, instanceId: str, caller: CallerDep) -> Response:
            """``{ready, status, hasQr}`` of the instance's WhatsApp session."""
            reply = ensure_ok(
                await gateway(request).backend.query(
                    SessionQuery.STATUS, caller, check_instance_id(instanceId)
                )
            )
            data = reply.data if isinstance(reply.data, dict) else {}
            details = data.get("connectionDetails") or {}
            body = {
                "ready": data.get("ready", details.get("ready", False)),
                "status": data.get("status", details.get("status", "unknown")),
                "hasQr": data.get("hasQr", details.get("hasQr", False)),
            }
            return JSONResponse(body)

    @router.get(
        "/{instanceId}/qr",
        response_model=s.QrCode,
        responses=QR_RESPONSES,
        summary="QR code",
        operation_id=f"{op}_qr",
    )
    async def qr(
        request: Request,
        instanceId: str,
        caller: CallerDep,
        format: Annotated[
            Literal["png", "svg"] | None,
            Query(description="render the code: `png` (image/png) or `svg` (image/svg+xml); default JSON"),
        ] = None,
    ) -> Response:
        """**200** ``{qrCode, expiresAt}`` (the raw pairing string, to render as a QR image, and
        when it expires: ISO 8601 UTC, an extension; null when unknown) when a code is available;
        **202** ``{message, status}`` otherwise: ``status: "generating"`` while the session waits
        for one (ask again in a few seconds), ``status: "logged_out"`` when the instance is logged
        out (reconnect it to get a new code); **409** when it is already connected. With
        ``?format=png|svg`` a 200 answers the rendered image instead, with ``ETag`` (the same for
        the same code) and ``X-QR-Expires-At``."""
        reply = ensure_ok(
            await gateway(request).backend.query(SessionQuery.QR, caller, check_instance_id(instanceId))
        )
        return qr_response(reply.status, reply.data, format)

    @router.post(
        "/{instanceId}/pairing-code",
        response_model=s.PairingCode,
        responses=COMMON,
        summary="Pairing code by phone number",
        operation_id=f"{op}_pairing_code",
    )
    async def pairing_code(
        request: Request, instanceId: str, body: s.PairingCodeBody, caller: CallerDep
    ) -> Response:
        """Link by phone number instead of QR: an 8-character code to enter on the phone
        (WhatsApp → Linked devices → Link with phone number)."""
        reply = await gateway(request).backend.command(
            SessionCommand.PAIR_PHONE,
            caller,
            check_instance_id(instanceId),
            {"phone": number_or_400(body.phone)},
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/send",
        response_model=s.MessageId,
        responses=SEND_ERRORS,
        summary="Send text message",
        operation_id=f"{op}_send",
    )
    async def send(
        request: Request, instanceId: str, body: s.SendTextBody, caller: CallerDep, key: IdempotencyKey = None
    ) -> Response:
        """Send a text; **200** ``{id}`` (WhatsApp message id). ``phone``: international number or
        JID. 409 when the instance is not connected; 429 when ``maxMessagesSent`` is reached."""
        gw = gateway(request)
        gw.limits.check(caller.user_id, MAX_MESSAGES_SENT)
        command = SendText(phone=recipient_or_400(body.phone), message=body.message)
        reply = await gw.backend.command(
            SessionCommand.SEND_TEXT,
            caller,
            check_instance_id(instanceId),
            payload(command),
            idempotency_key=key,
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/send-media",
        response_model=s.MessageId,
        responses=SEND_ERRORS,
        summary="Send media by URL",
        operation_id=f"{op}_send_media",
    )
    async def send_media(
        request: Request,
        instanceId: str,
        body: s.SendMediaBody,
        caller: CallerDep,
        key: IdempotencyKey = None,
    ) -> Response:
        """Send media the worker downloads from ``url`` (size limit, timeout, private addresses
        refused); **200** ``{id}``."""
        gw = gateway(request)
        gw.limits.check(caller.user_id, MAX_MESSAGES_SENT)
        if not body.url.startswith(("http://", "https://")):
            msg = "must be an http:// or https:// URL"
            from wa_gateway.errors import ApiError

            raise ApiError(400, f"Invalid url: {msg}", [{"field": "url", "message": msg}])
        command = SendMedia(
            phone=recipient_or_400(body.phone), url=body.url, caption=body.caption, filename=body.filename
        )
        reply = await gw.backend.command(
            SessionCommand.SEND_MEDIA,
            caller,
            check_instance_id(instanceId),
            payload(command),
            idempotency_key=key,
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/send-file",
        response_model=s.MessageId,
        responses=error_responses(400, 401, 404, 409, 413, 429, 503),
        summary="Send media from an uploaded file",
        operation_id=f"{op}_send_file",
    )
    async def send_file(
        request: Request,
        instanceId: str,
        caller: CallerDep,
        phone: Annotated[str, Form(description="recipient number or JID")],
        file: Annotated[UploadFile, File(description="the file to send (max GATEWAY_MAX_UPLOAD_BYTES)")],
        caption: Annotated[str | None, Form(max_length=4096)] = None,
        key: IdempotencyKey = None,
    ) -> Response:
        """``multipart/form-data`` with ``phone``, optional ``caption`` and ``file``; **200**
        ``{id}``. 413 above ``GATEWAY_MAX_UPLOAD_BYTES`` (16 MiB by default)."""
        gw = gateway(request)
        gw.limits.check(caller.user_id, MAX_MESSAGES_SENT)
        recipient = recipient_or_400(phone)
        instance_id = check_instance_id(instanceId)
        data, mimetype, filename = await read_upload(file, gw.settings.max_upload_bytes)
        command = SendMedia(
            phone=recipient,
            dataBase64=b64(data),
            mimetype=mimetype,
            filename=filename,
            caption=caption or None,
        )
        del data
        reply = await gw.backend.command(
            SessionCommand.SEND_MEDIA,
            caller,
            instance_id,
            payload(command),
            idempotency_key=key,
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/logout",
        response_model=s.SuccessMessage,
        responses=COMMON,
        summary="Log out of WhatsApp",
        operation_id=f"{op}_logout",
    )
    async def logout(request: Request, instanceId: str, caller: CallerDep) -> Response:
        """Unlink the WhatsApp account (a new QR scan is needed afterwards); the instance stays."""
        reply = await gateway(request).backend.command(
            SessionCommand.LOGOUT, caller, check_instance_id(instanceId)
        )
        return relay(reply)

    @router.get(
        "/{instanceId}/contacts",
        response_model=s.WhatsappContacts,
        responses=error_responses(401, 404, 409, 429, 503),
        summary="Contacts from WhatsApp",
        operation_id=f"{op}_contacts",
    )
    async def contacts(request: Request, instanceId: str, caller: CallerDep) -> Response:
        """Contacts and groups as the live WhatsApp session knows them."""
        reply = await gateway(request).backend.command(
            SessionCommand.FETCH_CONTACTS, caller, check_instance_id(instanceId)
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/contacts/add",
        response_model=s.AddContactResult,
        responses=SEND_ERRORS,
        summary="Add contact to WhatsApp",
        operation_id=f"{op}_contacts_add",
    )
    async def contacts_add(
        request: Request, instanceId: str, body: s.AddContactBody, caller: CallerDep
    ) -> Response:
        """Add a contact by number (``phone``) with an optional ``name``."""
        command = body.model_copy(update={"phone": number_or_400(body.phone)})
        reply = await gateway(request).backend.command(
            SessionCommand.ADD_CONTACT, caller, check_instance_id(instanceId), payload(command)
        )
        return relay(reply)

    @router.get(
        "/{instanceId}/contacts/db",
        response_model=s.DbContactsPage,
        responses=COMMON,
        summary="Contacts from the database",
        operation_id=f"{op}_contacts_db",
    )
    async def contacts_db(
        request: Request,
        instanceId: str,
        caller: CallerDep,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="contacts (max 1000)")] = 100,
        skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
        search: Annotated[str | None, Query(max_length=200, description="in name or number")] = None,
        onlyGroups: Annotated[bool, Query(description="only groups")] = False,
    ) -> Response:
        """Stored contacts with ``pagination {total, limit, skip, hasMore}``."""
        query = ContactsQuery(limit=limit, skip=skip, search=search or None, onlyGroups=onlyGroups)
        reply = await gateway(request).backend.query(
            SessionQuery.CONTACTS_DB, caller, check_instance_id(instanceId), payload(query)
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/contacts/import",
        response_model=s.ImportResult,
        responses=error_responses(401, 404, 409, 429, 503),
        summary="Import WhatsApp contacts into the database",
        operation_id=f"{op}_contacts_import",
    )
    async def contacts_import(request: Request, instanceId: str, caller: CallerDep) -> Response:
        """Copy the live session's contacts into the store; answers how many."""
        reply = await gateway(request).backend.command(
            SessionCommand.IMPORT_CONTACTS, caller, check_instance_id(instanceId)
        )
        return relay(reply)

    @router.post(
        "/{instanceId}/contacts/save",
        response_model=s.DbContact,
        responses=COMMON,
        summary="Save or update a contact in the database",
        operation_id=f"{op}_contacts_save",
    )
    async def contacts_save(
        request: Request, instanceId: str, body: s.SaveContactBody, caller: CallerDep
    ) -> Response:
        """Create or update the stored contact for ``number`` (a number, or a group id when
        ``isGroup``)."""
        number = body.number
        if not body.is_group:
            number = number_or_400(number, "number")
        command = body.model_copy(update={"number": number})
        reply = await gateway(request).backend.command(
            SessionCommand.SAVE_CONTACT, caller, check_instance_id(instanceId), payload(command)
        )
        return relay(reply)

    return router


instances_family = family("/api/instances", "Instances", short_status=False)
whatsapp_family = family("/api/whatsapp", "WhatsApp", short_status=True)
