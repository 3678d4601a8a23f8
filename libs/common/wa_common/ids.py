"""Sortable unique identifiers.

Ids are ULIDs (https://github.com/ulid/spec) rendered as 26-character Crockford base32 strings,
produced by the ``python-ulid`` library: lexicographic order follows creation time (millisecond
resolution), so event ids sort by when they happened.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import TypeGuard

from ulid import ULID

# What an id of ours may look like (ULIDs, and what a route accepts in their place): letters,
# digits, ``_`` and ``-``, 1-64 of them. ``ID_PATTERN`` is for pydantic/FastAPI ``pattern=``
# (Rust regex: ``$`` is the end of the text); Python code uses :func:`is_id` (a whole match:
# ``re.match`` with ``$`` would accept a trailing line break).
ID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"
_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def is_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` has the shape of an id (:data:`ID_PATTERN`), so it may reach a store."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


_last = b""
_last_lock = threading.Lock()


def new_id() -> str:
    """Return a new ULID string such as ``01JD3Z8M4W8Q2J7ZQ7S9W6X2KA`` (26 chars, time-sortable).

    Monotonic within a process (the ULID spec's monotonic mode): an id made in the same
    millisecond as the previous one, and not above it, is that one plus one, so ids made one
    after the other sort in that order (a message history ordered by id keeps the order the
    messages were recorded).
    """
    global _last
    made = ULID()
    raw = made.bytes
    with _last_lock:
        if raw > _last:
            _last = raw
            return str(made)
        raw = (int.from_bytes(_last, "big") + 1).to_bytes(16, "big")
        _last = raw
    return str(ULID.from_bytes(raw))


def id_timestamp_ms(value: str) -> int:
    """Return the creation time encoded in a ULID string, in Unix milliseconds (UTC).

    Raises ``ValueError`` when ``value`` is not a ULID.
    """
    return int(ULID.from_str(value).milliseconds)


def derived_id(*parts: str) -> str:
    """A ULID-shaped id that is the same for the same ``parts`` (first 16 bytes of SHA-256 of
    them): what a retried request with an ``Idempotency-Key`` must get again. Unlike
    :func:`new_id`, its time part says nothing about when it was made."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return str(ULID.from_bytes(digest[:16]))
