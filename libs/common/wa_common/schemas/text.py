"""Input types that every edge (the gateway, a service's bus handlers) validates the same way.

Why: PostgreSQL ``text`` cannot hold a NUL character and asyncpg cannot encode a lone UTF-16
surrogate (``"\\ud800"`` is valid JSON, but not Unicode text), so such a value used to fail the
store write deep inside a service (a 5xx, or a command retried into a dead-letter queue). HTTP
header fields must be RFC 9110 tokens (names) and visible ASCII (values), or the webhook
dispatcher cannot send them. These types refuse such input where it enters, with a message that
says why (pydantic turns the ``ValueError`` into a 400 naming the field).

- :func:`text_problem`: why a string is not storable text (``None`` when it is);
  :func:`storable`: the same string made storable (for text no caller can be told about).
- :data:`SafeStr`: ``str`` without NUL characters or lone surrogates.
- :data:`HeaderName`, :data:`HeaderValue`, :data:`WebhookHeaders`: custom webhook headers
  (at most :data:`MAX_HEADERS` of them, :data:`MAX_HEADERS_BYTES` bytes of names and values in
  all; names that frame or route the HTTP request are reserved).
- :func:`json_problems`: the rules every parsed JSON document entering a service follows, for
  the edges that see documents rather than models (the gateway's input guard, the session
  worker's request check): storable text everywhere (keys too), bounded strings, keys, lists and
  nesting, integers within +-(2^53 - 1) (:data:`MAX_INT`, what every JSON client represents
  exactly and every store column here holds), finite numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_HEADERS = 20
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 4096
MAX_HEADERS_BYTES = 8192
# RFC 9110 section 5.6.2: token = 1*tchar (always matched whole: ``$`` would let a trailing
# line break through).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII, space and tab (RFC 9110 field-value without obs-text), not starting or ending
# with white space.
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
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
        "user-agent",
    }
)
RESERVED_PREFIX = "x-webhook-"

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

MAX_INT = 2**53 - 1
MAX_STRING = 65_536
MAX_KEY = 256


def text_problem(value: str, max_length: int | None = None) -> str | None:
    """Why ``value`` cannot be stored as text (``None`` when it can): a NUL character (PostgreSQL
    refuses it), a lone surrogate (not Unicode; JSON's ``\\ud800`` escapes produce them), or more
    than ``max_length`` characters when a bound is given."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    if not value.isascii() and _SURROGATE.search(value):  # isascii() is O(1)
        return "must be valid Unicode text: it contains an unpaired surrogate (\\ud800-\\udfff)"
    if max_length is not None and len(value) > max_length:
        return f"at most {max_length} characters"
    return None


def storable(value: str, limit: int | None = None) -> str:
    """``value`` made storable: NUL characters and unpaired surrogates replaced by U+FFFD, cut to
    ``limit`` characters. For text a service did not get from a caller (WhatsApp's, another
    service's event), where refusing is no option."""
    value = _UNSTORABLE.sub("\ufffd", value)
    return value[:limit] if limit is not None else value


def json_problems(
    value: Any,
    *,
    max_string: int = MAX_STRING,
    max_items: int | None = None,
    max_depth: int = 32,
    unbounded: frozenset[str] = frozenset(),
) -> Iterator[tuple[str, str]]:
    """``(field, message)`` for every value of a parsed JSON document that breaks the rules
    above, in document order; ``field`` is the dotted path (``webhookSettings.headers.X-A``,
    list items by index), empty for the root. Strings of the fields in ``unbounded`` (dotted
    paths) have no length bound (their own size limit applies elsewhere). Messages never quote
    the value (it may be a secret)."""

    def walk(item: Any, field: str, depth: int) -> Iterator[tuple[str, str]]:
        if depth > max_depth:
            yield field, f"nested more than {max_depth} levels deep"
        elif isinstance(item, str):
            problem = text_problem(item, None if field in unbounded else max_string)
            if problem is not None:
                yield field, problem
        elif isinstance(item, bool) or item is None:
            return
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                yield field, f"numbers must lie between -{MAX_INT} and {MAX_INT}"
        elif isinstance(item, float):
            if not math.isfinite(item) or abs(item) > MAX_INT:
                yield field, f"numbers must be finite, between -{MAX_INT} and {MAX_INT}"
        elif isinstance(item, dict):
            for raw_key, child in item.items():
                key = str(raw_key)
                problem = text_problem(key, MAX_KEY)
                if problem is not None:  # reported on the object: a bad key is no field name
                    yield field, f"a key {problem}"
                    continue
                yield from walk(child, f"{field}.{key}" if field else key, depth + 1)
        elif isinstance(item, list):
            if max_items is not None and len(item) > max_items:
                yield field, f"at most {max_items} items"
                return
            for index, child in enumerate(item):
                yield from walk(child, f"{field}.{index}" if field else str(index), depth + 1)

    return walk(value, "", 0)


def _safe_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an HTTP header name (``None`` when it can): not an RFC 9110 token, or
    longer than :data:`MAX_HEADER_NAME`. Used at the edge and by the dispatcher when it sends."""
    if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
        return (
            f"header name {name[:40]!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~, "
            f"at most {MAX_HEADER_NAME})"
        )
    return None


def header_value_problem(value: str, max_length: int = MAX_HEADER_VALUE) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value (``None`` when it can); never quotes
    it (it may be a credential)."""
    if len(value) > max_length or not _FIELD_VALUE.fullmatch(value):
        return (
            f"header values must be visible ASCII characters, spaces or tabs, at most {max_length} "
            "(no line breaks, no non-ASCII text, no leading or trailing white space)"
        )
    return None


def is_reserved_header(name: str) -> bool:
    """Whether the dispatcher sets ``name`` itself or it frames the request (case-insensitive)."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIX)


def _header_name(value: str) -> str:
    problem = header_name_problem(value)
    if problem:
        raise ValueError(problem)
    if is_reserved_header(value):
        raise ValueError(f"header {value!r} is set by the webhook dispatcher and cannot be customised")
    return value


def _header_value(value: str) -> str:
    problem = header_value_problem(value)
    if problem:
        raise ValueError(problem)
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
