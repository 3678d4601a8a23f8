"""Gateway logic between the routes and the bus: query-parameter parsing, QR rendering, media
uploads, webhook URL checks, and the operations that combine several backend calls."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import mimetypes
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import segno
from fastapi import UploadFile
from starlette.responses import Response

from wa_common import netguard
from wa_common.bus import PublishError, RequestTimeout
from wa_common.bus.topology import STATS_QUERY_QUEUE, WEBHOOKS_QUERY_QUEUE
from wa_common.schemas import Caller
from wa_common.schemas.cluster import DbStatus, StoreStatus
from wa_common.schemas.events import EVENT_NAME_ALIASES
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.stats import STATS_LIMITS_STATE, LimitsStateQuery
from wa_gateway.backend import Backend, reply_as
from wa_gateway.errors import ApiError
from wa_gateway.limits import MAX_INSTANCES

if TYPE_CHECKING:
    from wa_gateway.state import Gateway

MAX_PAGE = 1000
# Asked of stats and the dispatcher too (same name as the worker's query); null when unanswered.
STORE_STATUS_OP = SessionQuery.STORE_STATUS.value
QR_MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
UPLOAD_CHUNK = 256 * 1024


def csv_list(value: str | None, *, aliases: dict[str, str] | None = None) -> list[str] | None:
    """``"a, b,,c"`` → ``["a", "b", "c"]`` (older names mapped to canonical ones); ``None`` if empty."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if aliases:
        items = [aliases.get(v, v) for v in items]
    return list(dict.fromkeys(items)) or None


def event_names(value: str | None) -> list[str] | None:
    """Event/action filter values, with ``connection_opened``/``connection_closed`` accepted."""
    return csv_list(value, aliases=dict(EVENT_NAME_ALIASES))


def iso_or_400(value: str | None, field: str) -> str | None:
    """Validate an ISO 8601 date/time query parameter (400 naming ``field`` otherwise)."""
    if value is None or value == "":
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        message = f"{value!r} is not an ISO 8601 date, e.g. 2023-01-01T00:00:00.000Z"
        raise ApiError(400, f"Invalid {field}: {message}", [{"field": field, "message": message}]) from None
    return value


async def check_webhook_url(url: str | None, *, allow_private: bool, field: str = "webhookUrl") -> None:
    """400 unless ``url`` is an absolute http(s) URL the dispatcher may call.

    Uses the shared SSRF guard (``wa_common.netguard``): a host that is, or resolves to, a
    loopback, private, link-local or metadata address is refused (unless ``allow_private``). A
    host that does not resolve *now* is accepted: the dispatcher checks again at connect time.
    """
    if url is None or url == "":
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        message = "must be an absolute http:// or https:// URL"
        raise ApiError(400, f"Invalid {field}: {message}", [{"field": field, "message": message}])
    try:
        await asyncio.wait_for(netguard.check_url(url, allow_private=allow_private), 3.0)
    except netguard.UnsafeURLError as exc:
        if "does not resolve" in exc.reason:
            return
        raise ApiError(
            400, f"Invalid {field}: {exc.reason}", [{"field": field, "message": exc.reason}]
        ) from None
    except TimeoutError:
        return


QR_EXPIRES_HEADER = "X-QR-Expires-At"


def qr_etag(code: str) -> str:
    """A strong ETag naming one QR code (a digest, so equal codes have equal tags)."""
    return '"' + hashlib.sha256(code.encode()).hexdigest()[:32] + '"'


def render_qr(code: str, fmt: str, expires_at: str | None = None) -> Response:
    """The QR image of ``code`` as ``image/png`` or ``image/svg+xml`` (segno, scale 8, border 4),
    with ``ETag`` (the same for the same code) and ``X-QR-Expires-At`` (ISO 8601 UTC, when
    known): what the JSON answer says in ``expiresAt``, for clients that ask for the image."""
    qr = segno.make(code, error="l", micro=False)
    buf = io.BytesIO()
    qr.save(buf, kind=fmt, scale=8, border=4)
    headers = {"ETag": qr_etag(code)}
    if expires_at:
        headers[QR_EXPIRES_HEADER] = expires_at
    return Response(buf.getvalue(), media_type=QR_MEDIA_TYPES[fmt], headers=headers)


async def read_upload(file: UploadFile, max_bytes: int) -> tuple[bytes, str, str]:
    """The uploaded file's bytes (413 above ``max_bytes``), its mimetype and filename.

    python-multipart has already spooled the part to a temporary file (in memory up to 1 MiB);
    the body-size middleware bounded the request, and this reads at most ``max_bytes + 1``.
    """
    if file.size is not None and file.size > max_bytes:
        raise ApiError(413, f"File too large: the limit is {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await file.read(UPLOAD_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(413, f"File too large: the limit is {max_bytes} bytes")
        chunks.append(chunk)
    if total == 0:
        raise ApiError(
            400, "Invalid file: the uploaded file is empty", [{"field": "file", "message": "empty"}]
        )
    filename = (file.filename or "file").rsplit("/", 1)[-1].rsplit("\\", 1)[-1][:255] or "file"
    mimetype = file.content_type
    if not mimetype or mimetype == "application/octet-stream":
        mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return b"".join(chunks), mimetype, filename


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def refresh_instance_quota(gw: Gateway, caller: Caller) -> None:
    """Before creating an instance, ask stats whether ``maxInstances`` blocks the caller (the
    count is not daily, so no event lifts it): the answer replaces the local ``maxInstances``
    block. If stats does not answer within 2 s the local book decides."""
    try:
        reply = await gw.backend.stats(
            STATS_LIMITS_STATE, caller, LimitsStateQuery(user_id=caller.user_id).dump(), timeout_s=2.0
        )
    except (RequestTimeout, PublishError):
        return
    if reply.ok and isinstance(reply.data, dict):
        gw.limits.replace_user(caller.user_id, list(reply.data.get("blocked") or []), limit=MAX_INSTANCES)


async def store_status(backend: Backend, caller: Caller) -> DbStatus:
    """``GET /api/db/status``: the worker's store at the top level, every service's in ``services``
    (``None`` for one that did not answer, or refused)."""

    async def optional(target: str) -> StoreStatus | None:
        try:
            reply = await backend.query(STORE_STATUS_OP, caller, target=target, timeout_s=2.0)
        except (RequestTimeout, PublishError):
            return None
        return reply_as(StoreStatus, reply) if reply.ok else None

    worker, stats, webhooks = await asyncio.gather(
        backend.query(SessionQuery.STORE_STATUS, caller),
        optional(STATS_QUERY_QUEUE),
        optional(WEBHOOKS_QUERY_QUEUE),
    )
    store = reply_as(StoreStatus, worker)
    services = {"session-worker": store, "stats": stats, "webhook-dispatcher": webhooks}
    return DbStatus(provider=store.provider, url=store.url, services=services)
