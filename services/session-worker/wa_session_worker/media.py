"""Media for outgoing messages: decode an upload, or download a URL safely.

The download uses the shared SSRF guard :mod:`wa_common.netguard`: only ``http``/``https``; the
host must resolve to public addresses only (no private, loopback, link-local — which covers cloud
metadata endpoints —, multicast, reserved or unspecified address) unless
``WORKER_MEDIA_ALLOW_PRIVATE`` is set; the address is checked at connect time and connected to
as checked (no DNS-rebinding window); redirects are not followed; the body is streamed and cut at
``WORKER_MEDIA_MAX_BYTES``; the whole download is bounded by ``WORKER_MEDIA_TIMEOUT_S``;
``text/html`` responses are refused (a web page is not media).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from wa_common.bus.router import RequestError
from wa_common.netguard import UnsafeURLError, check_url, guarded_client
from wa_common.schemas.session import MAX_FILENAME
from wa_common.schemas.text import text_problem
from wa_session_worker.service.guard import MAX_MIMETYPE

# A MIME type as RFC 6838 names them (restricted-name/restricted-name), within its column.
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_LENGTH = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class Media:
    data: bytes
    mimetype: str
    filename: str | None


def message_type_for(mimetype: str) -> str:
    """WhatsApp message type of a MIME type: image, video, audio or document."""
    major = mimetype.split("/", 1)[0].lower()
    return major if major in ("image", "video", "audio") else "document"


def _guess_type(filename: str | None) -> str | None:
    return mimetypes.guess_type(filename)[0] if filename else None


def _served_type(content_type: str) -> str | None:
    """A server's Content-Type when it is a plain MIME type that fits the store, else ``None``."""
    if len(content_type) <= MAX_MIMETYPE and _MIME.fullmatch(content_type):
        return content_type
    return None


def _url_filename(path: str) -> str | None:
    """The file name at the end of a URL path, when it is storable text (no control characters,
    at most ``MAX_FILENAME`` characters); else ``None``."""
    name = unquote(path.rsplit("/", 1)[-1])
    if not name or len(name) > MAX_FILENAME or text_problem(name) or not name.isprintable():
        return None
    return name


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, f"media larger than {max_bytes} bytes")


def decode_upload(data_base64: str, mimetype: str | None, filename: str | None, max_bytes: int) -> Media:
    """Decode the gateway's base64 upload; 400 when malformed, 413 when too large."""
    try:
        data = base64.b64decode(data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            400, "dataBase64 is not valid base64", [{"field": "dataBase64", "message": "invalid base64"}]
        ) from None
    if not data:
        raise RequestError(400, "the file is empty")
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return Media(data, mimetype or _guess_type(filename) or "application/octet-stream", filename)


async def download(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    mimetype: str | None = None,
    filename: str | None = None,
) -> Media:
    """Fetch ``url`` under the guard above. Errors: 400 (refused URL, HTTP error status, not
    media), 413 (too large), 504 (timeout), 502 (connection failed)."""
    try:
        await check_url(url, allow_private=allow_private)
    except UnsafeURLError as exc:
        raise RequestError(
            400, f"media URL refused: {exc.reason}", [{"field": "url", "message": exc.reason}]
        ) from None
    parts = urlsplit(url)
    name = filename or _url_filename(parts.path)
    try:
        async with (
            asyncio.timeout(timeout_s),
            guarded_client(allow_private=allow_private, timeout=timeout_s) as client,
            client.stream("GET", url) as response,
        ):
            if response.is_redirect:
                raise RequestError(400, "media URL redirects; redirects are not followed")
            if response.status_code >= 400:
                raise RequestError(400, f"media URL answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and _LENGTH.fullmatch(declared) and int(declared) > max_bytes:
                raise _too_large(max_bytes)
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type.startswith("text/html") or content_type == "application/xhtml+xml":
                raise RequestError(400, f"media URL returned {content_type}, not media")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except UnsafeURLError as exc:
        raise RequestError(400, f"media URL refused: {exc.reason}") from None
    except TimeoutError:
        raise RequestError(504, f"media download did not finish within {timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        raise RequestError(502, f"media download failed: {type(exc).__name__}") from None
    if size == 0:
        raise RequestError(400, "media URL returned an empty body")
    served = _served_type(content_type)
    effective = mimetype or (served if served != "application/octet-stream" else None)
    return Media(b"".join(chunks), effective or _guess_type(name) or "application/octet-stream", name)
