"""SQLAlchemy (async) engine helpers for the services' relational stores (DESIGN.md, "Stores").

URLs may be written the short way (``postgresql://...``, ``sqlite:///data/x.db``); they are
mapped to the async drivers (asyncpg, aiosqlite). SQLite files get WAL journaling, a 5 s busy
timeout and foreign keys, so several processes (two session workers) can share one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def async_url(url: str) -> URL:
    """Map a database URL to its async driver; raises ``ValueError`` for an unsupported scheme."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r} (use postgresql:// or sqlite://)"
    )


def provider_of(url: str) -> str:
    """``postgresql`` or ``sqlite`` (the store provider name shown by ``/api/db/status``)."""
    return make_url(url).get_backend_name()


def redact_url(url: str) -> str:
    """The URL without username and password (safe to log or return to an admin)."""
    # URL.set() treats None as "leave unchanged": clear the fields with the tuple's _replace.
    parsed = make_url(url)._replace(username=None, password=None)
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, recycle_s: float = 600.0
) -> AsyncEngine:
    """An async engine for ``url``; creates the parent directory of a SQLite file. Bound
    parameters never appear in SQLAlchemy's error texts or logs (``hide_parameters``).

    No ``pool_pre_ping``: it costs a round trip (and a rollback) per checkout on every hot path.
    Pooled connections are recycled after ``recycle_s`` (s) instead; a connection that died under
    the pool (a database restart) fails its statement, and every caller already retries or lets
    the bus redeliver on a store error, after which the pool hands out a fresh connection
    (SQLAlchemy invalidates the whole pool on a disconnect error).
    """
    parsed = async_url(url)
    # hide_parameters: a failing statement's error text (logged, maybe relayed) must never carry
    # its bound values: webhook secrets, header values, password hashes, sealed API keys.
    kwargs: dict[str, Any] = {"echo": echo, "pool_recycle": recycle_s, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    """``SELECT 1`` on the store (readiness check)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


def store_status(url: str) -> dict[str, str]:
    """The ``store.status`` answer of a service: ``{"provider": ..., "url": <no credentials>}``.

    Every service that owns a store answers the admin query ``store.status`` with this, so
    ``GET /api/db/status`` can list them all (reference, "Database Management").
    """
    return {"provider": provider_of(url), "url": redact_url(url)}
