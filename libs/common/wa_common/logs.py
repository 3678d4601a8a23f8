"""Structured logging with structlog, and the correlation id that follows a request.

Every log line is one JSON object (``LOG_FORMAT=json``, the default) or a readable line
(``console``). The correlation id lives in a context variable: HTTP middleware binds it from the
``X-Correlation-Id`` request header (or a new id), the bus publisher copies it into the AMQP
header ``x-correlation-id`` and the bus consumer binds it back, so one id follows a call across
services. Standard-library loggers (uvicorn, aio-pika, alembic) are routed through the same
renderer.

Exceptions are logged by :func:`exception_fields`: types (qualified), SQLSTATE codes and stack
frames, never a message (a driver quotes the value it could not store, which may be a webhook
secret or a password hash; others quote the request that failed) except a network error's.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from wa_common.ids import new_id

CORRELATION_HEADER = "x-correlation-id"

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)


def get_correlation_id() -> str | None:
    """Return the correlation id bound in the current context, or ``None``."""
    return _correlation_id.get()


def ensure_correlation_id() -> str:
    """Return the bound correlation id, binding a new one first if there is none."""
    cid = _correlation_id.get()
    if cid is None:
        cid = new_id()
        _correlation_id.set(cid)
    return cid


@contextmanager
def correlation_scope(correlation_id: str | None) -> Iterator[str]:
    """Bind ``correlation_id`` (or a new id when ``None``) for the duration of the block."""
    cid = correlation_id or new_id()
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


def _add_correlation_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    cid = _correlation_id.get()
    if cid is not None and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = cid
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the standard library for ``service``.

    ``level`` is a standard level name; ``fmt`` is ``json`` or ``console``. Safe to call twice.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aio_pika", "aiormq", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger; ``name`` is usually ``__name__``."""
    return structlog.stdlib.get_logger(name)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver exception it wraps (SQLAlchemy's ``orig``) and their explicit causes."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack and len(seen) < 8:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        stack.extend([current.__cause__, orig if isinstance(orig, BaseException) else None])


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE code a database driver put on ``exc`` (asyncpg ``sqlstate``, psycopg ``pgcode``)."""
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def describe_exception(exc: BaseException) -> str:
    """``sqlalchemy.exc.DBAPIError <- asyncpg.exceptions.RaiseError[P0001]``: the qualified types
    and SQLSTATE codes of ``exc`` and what it wraps. Messages are kept only for network errors
    (addresses, errno)."""
    parts: list[str] = []
    for item in exception_chain(exc):
        kind = type(item)
        text = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        state = sqlstate(item)
        if state:
            text += f"[{state}]"
        if isinstance(item, OSError | TimeoutError) and str(item):
            text += f": {str(item)[:200]}"
        if text not in parts:
            parts.append(text)
    return " <- ".join(parts)


def exception_fields(exc: BaseException) -> dict[str, Any]:
    """Log fields for any failure: ``error`` (:func:`describe_exception`) and ``frames`` (where it
    was raised, without its message)."""
    frames = "".join(traceback.format_tb(exc.__traceback__)) + type(exc).__name__
    return {"error": describe_exception(exc), "frames": frames}
