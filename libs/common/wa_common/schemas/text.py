"""Input types that every edge (the gateway, a service's bus handlers) validates the same way.

Why: PostgreSQL ``text`` cannot hold a NUL character and asyncpg cannot encode a lone UTF-16
surrogate (``"\\ud800"`` is valid JSON, but not Unicode text), so such a value used to fail the
store write deep inside a service (a 5xx, or a command retried into a dead-letter queue). HTTP
header fields must be RFC 9110 tokens (names) and visible ASCII (values), or the webhook
dispatcher cannot send them. These types refuse such input where it enters, with a message that
says why (pydantic turns the ``ValueError`` into a 400 naming the field).

- :func:`text_problem`: why a string is not storable text (``None`` when it is).
- :data:`SafeStr`: ``str`` without NUL characters or lone surrogates.
- :data:`HeaderName`, :data:`HeaderValue`, :data:`WebhookHeaders`: custom webhook headers
  (at most :data:`MAX_HEADERS` of them, :data:`MAX_HEADERS_BYTES` bytes of names and values in
  all; names that frame or route the HTTP request are reserved).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_HEADERS = 20
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 4096
MAX_HEADERS_BYTES = 8192
# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Visible ASCII, space and tab (RFC 9110 field-value without obs-text), not starting or ending
# with white space.
_FIELD_VALUE = re.compile(r"^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$")
# The dispatcher sets these itself (framing, routing, the signature): a custom value would break
# the request or forge the signature.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authorization",
        "expect",
    }
)
RESERVED_PREFIX = "x-webhook-"

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (``None`` when it can): a NUL character (PostgreSQL
    refuses it) or a lone surrogate (not Unicode; JSON's ``\\ud800`` escapes produce them)."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    if _SURROGATE.search(value):
        return "must be valid Unicode text: it contains an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _safe_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(
            f"header name {value[:40]!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
        )
    lowered = value.lower()
    if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIX):
        raise ValueError(f"header {value!r} is set by the webhook dispatcher and cannot be customised")
    return value


def _header_value(value: str) -> str:
    if not _FIELD_VALUE.match(value):
        raise ValueError(
            "header values must be visible ASCII characters, spaces or tabs (no line breaks, no "
            "non-ASCII text, no leading or trailing white space)"
        )
    return value


def _headers_total(headers: dict[str, str]) -> dict[str, str]:
    lowered = [name.lower() for name in headers]
    if len(set(lowered)) != len(lowered):
        raise ValueError("header names must be unique (case-insensitively)")
    size = sum(len(k) + len(v) for k, v in headers.items())
    if size > MAX_HEADERS_BYTES:
        raise ValueError(f"headers take {size} bytes; at most {MAX_HEADERS_BYTES} in all")
    return headers


SafeStr = Annotated[str, AfterValidator(_safe_text)]
HeaderName = Annotated[str, Field(min_length=1, max_length=MAX_HEADER_NAME), AfterValidator(_header_name)]
HeaderValue = Annotated[str, Field(max_length=MAX_HEADER_VALUE), AfterValidator(_header_value)]
WebhookHeaders = Annotated[
    dict[HeaderName, HeaderValue], Field(max_length=MAX_HEADERS), AfterValidator(_headers_total)
]
