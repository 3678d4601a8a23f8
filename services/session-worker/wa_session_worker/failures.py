"""Failures, told apart by cause (the request's data, or the store itself), and logged safely.

- :func:`is_data_error`: the statement's *values* cannot be stored (PostgreSQL SQLSTATE classes
  22 "data exception" and 23 "integrity constraint violation": a NUL character, a string longer
  than its column, a number out of range...; asyncpg's client-side "invalid input for query
  argument" (an unpaired surrogate, an integer beyond int64); SQLite's ``OverflowError`` and
  ``UnicodeEncodeError``; MongoDB's invalid or too-large documents and write errors). Sending the
  same data again fails the same way: the request is answered 400, never retried.
- :func:`is_store_unavailable`: the store is unreachable, timed out or refused the connection:
  the message is redelivered, since a later attempt may succeed.
Failures are logged with ``wa_common.logs.exception_fields`` (types, SQLSTATE codes, frames; no
messages: asyncpg quotes the offending argument, ``invalid input for query argument $4:
'Bearer …'``, which may be a webhook secret or a header value).
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from wa_common.logs import exception_chain, sqlstate

try:  # pymongo is a dependency of the MongoDB store only
    from bson.errors import InvalidDocument, InvalidStringData
    from pymongo.errors import ConnectionFailure, PyMongoError, WriteError

    _MONGO_DATA: tuple[type[BaseException], ...] = (InvalidDocument, InvalidStringData)
    _MONGO_DOWN: tuple[type[BaseException], ...] = (ConnectionFailure,)
except ImportError:  # pragma: no cover
    _MONGO_DATA = _MONGO_DOWN = ()
    WriteError = PyMongoError = None  # type: ignore[assignment,misc]

# SQLSTATE classes caused by the values of a statement (PostgreSQL appendix A).
_DATA_CLASSES = ("22", "23")
_RETRYABLE_LABELS = ("TransientTransactionError", "RetryableWriteError")
_NETWORK: tuple[type[BaseException], ...] = (OSError, TimeoutError, *_MONGO_DOWN)
_UNAVAILABLE: tuple[type[BaseException], ...] = (sa_exc.DBAPIError, sa_exc.TimeoutError, *_NETWORK)


def _mongo_data_error(exc: BaseException) -> bool:
    if isinstance(exc, _MONGO_DATA):
        return True
    if WriteError is not None and isinstance(exc, WriteError):
        return not any(exc.has_error_label(label) for label in _RETRYABLE_LABELS)
    return False


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the store refusing the statement's values (see the module docstring)."""
    for item in exception_chain(exc):
        if isinstance(item, sa_exc.DataError | sa_exc.IntegrityError | UnicodeError | OverflowError):
            return True
        state = sqlstate(item)
        if state is not None and state[:2] in _DATA_CLASSES:
            return True
        if _mongo_data_error(item):
            return True
    return False


def is_store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure failure worth retrying (never a data error)."""
    if is_data_error(exc):
        return False
    return isinstance(exc, _UNAVAILABLE)


def data_error_message(exc: BaseException) -> str:
    """What was wrong with the data, in words that quote none of it."""
    for item in exception_chain(exc):
        state = sqlstate(item) or ""
        if state == "22001":
            return "a value is longer than the store allows"
        if state == "22003" or isinstance(item, OverflowError):
            return "a number is out of range"
        if state in ("22021", "22P05") or isinstance(item, UnicodeError):
            return "a value contains characters that cannot be stored (NUL or unpaired surrogates)"
        if state.startswith("23") or isinstance(item, sa_exc.IntegrityError):
            return "the request conflicts with stored data"
    return "a value cannot be stored"
