"""Webhook logic without I/O: which events an instance wants, the body, its signature, headers.

Canonical body (reference, "Webhook signature compatibility"): receivers verify
``HMAC-SHA256(secret, JSON.stringify(JSON.parse(body)))``, so the body we send must be a fixed
point of that round trip. :func:`canonical_json` produces exactly what ``JSON.stringify`` would
(ECMA-262 §25.5.2 ``SerializeJSONProperty``): compact separators; strings with only ``"``, ``\\``
and control characters escaped (``\\b \\f \\n \\r \\t``, others ``\\u00xx``), non-ASCII kept as
UTF-8 (lone surrogates, which UTF-8 cannot carry, become U+FFFD); object keys in JavaScript's
own-property order (integer-like keys such as ``"7"`` first in ascending numeric order, then the
others in insertion order); numbers formatted as ``Number.prototype.toString`` does (``1.0`` →
``1``, ``1e-7``, ``1e+21``; integers beyond 2**53 as the double JavaScript would read);
``NaN``/``Infinity`` → ``null``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from wa_common import __version__
from wa_common.logs import get_logger
from wa_common.schemas.events import (
    ConnectedData,
    DisconnectedData,
    EventType,
    LimitExceededData,
    MessageReceivedData,
    MessageSentData,
    MessageStatusData,
    QrReceivedData,
    WebhookUpdatedData,
)
from wa_common.schemas.status import MessageStatus
from wa_common.schemas.text import header_name_problem, header_value_problem, is_reserved_header
from wa_common.schemas.wire import iso_ms

log = get_logger(__name__)

USER_AGENT = f"wa-webhooks/{__version__}"
# Stored custom header values are sent up to this length (the gateway accepts at most
# ``wa_common.schemas.text.MAX_HEADER_VALUE`` now; older settings may hold longer ones).
MAX_HEADER_VALUE = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
MAX_ERROR_TEXT = 500
REDACTED = "[redacted]"
_MAX_SAFE = 2**53 - 1
_ARRAY_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")

DATA_MODELS: dict[str, type[BaseModel]] = {
    EventType.MESSAGE_RECEIVED: MessageReceivedData,
    EventType.MESSAGE_SENT: MessageSentData,
    EventType.MESSAGE_STATUS: MessageStatusData,
    EventType.CONNECTED: ConnectedData,
    EventType.DISCONNECTED: DisconnectedData,
    EventType.QR_RECEIVED: QrReceivedData,
    EventType.LIMIT_EXCEEDED: LimitExceededData,
    EventType.WEBHOOK_UPDATED: WebhookUpdatedData,
}


# --- canonical JSON -----------------------------------------------------------------------------


def _js_number(value: float) -> str:
    """``Number.prototype.toString()`` of a double (ECMA-262 Number::toString, radix 10)."""
    if math.isnan(value) or math.isinf(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-trip digits, as JavaScript does; only the layout differs.
    mantissa, _, exp_part = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # Decimal exponent n such that value = 0.d1d2... * 10**n.
    n = len(int_part) + (int(exp_part) if exp_part else 0)
    if int_part == "0":
        n = -(len(frac_part) - len(frac_part.lstrip("0"))) + (int(exp_part) if exp_part else 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        out = (digits[0] + ("." + digits[1:] if k > 1 else "")) + exp
    return sign + out


def _js_order(obj: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Keys in JavaScript's OrdinaryOwnPropertyKeys order (array indices first, ascending)."""
    indices = [(k, v) for k, v in obj.items() if _ARRAY_INDEX.match(k) and int(k) < 2**32 - 1]
    others = [(k, v) for k, v in obj.items() if not (_ARRAY_INDEX.match(k) and int(k) < 2**32 - 1)]
    indices.sort(key=lambda kv: int(kv[0]))
    return indices + others


def _clean_str(value: str) -> str:
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: join valid pairs, lone ones become U+FFFD
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def _encode(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False:
        out.append("null" if value is None else ("true" if value else "false"))
    elif isinstance(value, str):
        out.append(json.dumps(_clean_str(value), ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value) if abs(value) <= _MAX_SAFE else _js_number(float(value)))
    elif isinstance(value, float):
        out.append(_js_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in _js_order({_clean_str(str(k)): v for k, v in value.items()}):
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """UTF-8 bytes equal to ``JSON.stringify(value)`` (see the module doc); raises ``TypeError``."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


# --- body, signature, headers -------------------------------------------------------------------


def webhook_data(event: str, data: Mapping[str, Any], instance_id: str) -> dict[str, Any]:
    """The ``data`` object for ``event`` in the reference's field order.

    Known event types are validated against their payload model and dumped in the reference's
    order; a payload that does not fit is sent as it is (logged), never dropped. A missing or
    ``null`` ``instanceId`` (``limit_exceeded`` about a whole user) becomes ``instance_id``.
    """
    payload = dict(data)
    if payload.get("instanceId") is None:
        payload["instanceId"] = instance_id
    model = DATA_MODELS.get(event)
    if model is not None:
        try:
            return model.model_validate(payload).model_dump(by_alias=True)
        except ValidationError as exc:
            # Field names only: the values are message contents.
            fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
            log.warning(
                "event data does not match the reference; sent as is", event_type=event, fields=fields
            )
    return payload


def webhook_body(event: str, data: Mapping[str, Any], occurred_at: datetime) -> bytes:
    """The request body ``{"event", "data", "timestamp"}`` as canonical JSON bytes; ``timestamp``
    is ``occurred_at`` as the reference shows it (``2023-01-01T12:00:00.000Z``: UTC, milliseconds)."""
    return canonical_json({"event": event, "data": dict(data), "timestamp": iso_ms(occurred_at)})


class InvalidHeader(ValueError):
    """A custom header that cannot be sent in HTTP. The message names the header, never its
    value (custom header values are often credentials, e.g. ``Authorization``)."""


def sign(body: bytes, secret: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``body`` with ``secret`` (UTF-8), as the reference verifies."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def request_headers(
    *,
    event_id: str,
    event: str,
    timestamp: str,
    body: bytes,
    secret: str | None,
    custom: Mapping[str, Any] | None,
) -> dict[str, str]:
    """Headers of one webhook request.

    ``custom`` headers come first and never replace ours or those that frame the request
    (``wa_common.schemas.text.is_reserved_header``: left out). A custom
    header that HTTP cannot carry — a name that is not a token, a value with a line break, another
    control character or non-ASCII text, or too long — raises :class:`InvalidHeader` (the attempt
    fails, saying which header): it is never sent altered or silently left out.
    """
    headers: dict[str, str] = {}
    for raw_name, value in (custom or {}).items():
        name = str(raw_name)
        if is_reserved_header(name):
            continue
        problem = header_name_problem(name)
        if problem:
            raise InvalidHeader(f"custom {problem}")
        text = str(value).strip(" \t")
        if header_value_problem(text, MAX_HEADER_VALUE):
            raise InvalidHeader(
                f"custom header {name!r} has a value HTTP cannot carry: only visible ASCII "
                f"characters, spaces and tabs, at most {MAX_HEADER_VALUE} (no line breaks, "
                "control characters or non-ASCII text)"
            )
        headers[name] = text
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    headers["X-Webhook-Id"] = event_id
    headers["X-Webhook-Event"] = event
    headers["X-Webhook-Timestamp"] = timestamp
    if secret:
        headers["X-Webhook-Signature"] = sign(body, secret)
    return headers


def safe_error(text: str, secrets: list[str | None]) -> str:
    """An attempt's error text as stored, logged and shown by the deliveries API: each of
    ``secrets`` (the webhook secret, custom header values, the URL) replaced by ``[redacted]``
    — also as Python would quote it in an exception message —, control characters (NUL
    included) turned into spaces, at most ``MAX_ERROR_TEXT`` characters."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "replace"))[2:-1]}:
            if len(form) >= 3:
                text = text.replace(form, REDACTED)
    text = _CONTROL.sub(" ", text).encode("utf-8", "replace").decode("utf-8", "replace")
    return text[:MAX_ERROR_TEXT]


# --- event filter -------------------------------------------------------------------------------


def wants(
    *,
    enabled: bool,
    url: str | None,
    notify_received: bool,
    notify_sent: bool,
    notify_delivery: bool,
    notify_read: bool,
    event: str,
    data: Mapping[str, Any],
) -> bool:
    """Whether an instance with these settings is sent ``event`` (issue 6's filter).

    ``message_received`` ← notifyReceived, ``message_sent`` ← notifySent, ``message_status``
    ``delivered`` ← notifyDelivery, ``read``/``played`` ← notifyRead (other statuses: never);
    ``connected``, ``disconnected``, ``qr_received``, ``limit_exceeded``, ``webhook_updated``:
    always. Nothing when webhooks are disabled or no URL is set.
    """
    if not enabled or not url:
        return False
    if event == EventType.MESSAGE_RECEIVED:
        return notify_received
    if event == EventType.MESSAGE_SENT:
        return notify_sent
    if event == EventType.MESSAGE_STATUS:
        status = data.get("status")
        if status == MessageStatus.DELIVERED:
            return notify_delivery
        if status in (MessageStatus.READ, MessageStatus.PLAYED):
            return notify_read
        return False
    return event in (
        EventType.CONNECTED,
        EventType.DISCONNECTED,
        EventType.QR_RECEIVED,
        EventType.LIMIT_EXCEEDED,
        EventType.WEBHOOK_UPDATED,
    )


def outcome_of(status_code: int) -> str:
    """Bounded metric label of an HTTP status: ``2xx``, ``3xx``, ``4xx`` or ``5xx``."""
    if 200 <= status_code < 300:
        return "2xx"
    if 300 <= status_code < 400:
        return "3xx"
    if 400 <= status_code < 500:
        return "4xx"
    return "5xx"
