"""Simulator-only admin routes: act as a simulated phone on the simulated WhatsApp network
(``wa.sim``). Registered only when ``GATEWAY_SIMULATOR_ROUTES`` is on (default: when
``WA_ENGINE=simulator``); absent with the neonize engine. Administrators only."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from pydantic import Field

from wa_common.bus import Bus
from wa_common.schemas.instances import QrCode, SuccessMessage
from wa_common.schemas.messages import MessageId
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.sim import SimError, normalise_phone
from wa_common.schemas.wire import ApiModel
from wa_common.sim_client import sim_enter_code, sim_scan, sim_send
from wa_gateway import schemas as s
from wa_gateway.api.routing import AdminDep, ask
from wa_gateway.backend import ensure_ok, reply_as
from wa_gateway.errors import ApiError, error_responses

router = APIRouter(prefix="/api/admin/sim", tags=["Simulator (admin)"])


class ScanBody(s._In):
    phone: str | None = Field(
        default=None,
        description="number of the simulated phone that scans (default: a new one)",
        examples=["15550001111"],
    )
    pushName: str | None = Field(default=None, max_length=100, examples=["Sim Phone"])


class ScanResult(ApiModel):
    success: bool
    message: str
    phone: str = Field(description="the number the instance is now linked as")


class CodeBody(s._In):
    code: str = Field(min_length=8, max_length=9, examples=["ABCD-EFGH"])
    phone: str = Field(examples=["15550001111"], description="must be the number the code was requested for")


class SimMessageBody(s._In):
    from_: str = Field(alias="from", description="the simulated sender's number", examples=["15550002222"])
    to: str = Field(description="recipient: an instance's number or JID", examples=["15550001111"])
    message: str = Field(min_length=1, max_length=65536, examples=["Hello from a simulated contact"])
    pushName: str | None = Field(default=None, max_length=100)


def _phone(raw: str, field: str) -> str:
    try:
        return normalise_phone(raw)
    except ValueError as exc:
        raise ApiError(400, f"Invalid {field}: {exc}", [{"field": field, "message": str(exc)}]) from None


def _bus(request: Request) -> Bus:
    bus = request.app.state.runtime.bus
    if bus is None:
        raise ApiError(503, "Service unavailable: the gateway is not connected to the bus")
    return bus


@router.post(
    "/instances/{instanceId}/scan",
    response_model=ScanResult,
    responses=error_responses(400, 401, 403, 404, 409, 503),
    summary="Scan an instance's QR code with a simulated phone",
)
async def scan(request: Request, instanceId: str, body: ScanBody, caller: AdminDep) -> ScanResult:
    """The simulated phone ``phone`` scans the instance's current QR code: the instance links
    as ``<phone>@s.whatsapp.net``. 409 while it shows no QR code (generating, or already linked)."""
    phone = _phone(body.phone, "phone") if body.phone else "1555" + f"{secrets.randbelow(10**7):07d}"
    reply = ensure_ok(await ask(request, SessionQuery.QR, caller, instanceId))
    code = reply_as(QrCode, reply).qr_code if reply.status == 200 else None
    if not code:
        raise ApiError(409, "The instance shows no QR code yet (generating or already linked); try again")
    try:
        await sim_scan(_bus(request), code, phone, push_name=body.pushName)
    except SimError as exc:
        raise ApiError(409, f"Scan refused by the simulated network: {exc}") from None
    return ScanResult(success=True, message=f"QR code scanned by {phone}", phone=phone)


@router.post(
    "/pairing-code",
    response_model=SuccessMessage,
    responses=error_responses(400, 401, 403, 409, 503),
    summary="Enter a pairing code on a simulated phone",
)
async def enter_code(request: Request, body: CodeBody, caller: AdminDep) -> SuccessMessage:
    """The simulated phone ``phone`` enters ``code`` (from ``POST .../pairing-code``)."""
    try:
        await sim_enter_code(_bus(request), body.code, _phone(body.phone, "phone"))
    except SimError as exc:
        raise ApiError(409, f"Code refused by the simulated network: {exc}") from None
    return SuccessMessage(success=True, message="Pairing code entered")


@router.post(
    "/messages",
    response_model=MessageId,
    responses=error_responses(400, 401, 403, 409, 503),
    summary="Send a message as a simulated contact",
)
async def contact_message(request: Request, body: SimMessageBody, caller: AdminDep) -> MessageId:
    """The simulated contact ``from`` sends ``message`` to ``to`` (an instance's number); the
    instance receives it as ``message_received``. 409 when ``to`` has no live session."""
    try:
        message_id = await sim_send(
            _bus(request),
            _phone(body.from_, "from"),
            _phone(body.to, "to"),
            text=body.message,
            push_name=body.pushName,
        )
    except SimError as exc:
        raise ApiError(409, f"Message refused by the simulated network: {exc}") from None
    return MessageId(id=message_id)
