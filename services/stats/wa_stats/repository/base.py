"""What every stats repository shares: the engine's transactions, the dialect's ``INSERT`` (the
same upserts on PostgreSQL and SQLite) and the tables.

On SQLite, write transactions of this process are serialised by a lock (SQLite has one writer at
a time anyway). Repository methods take aware UTC datetimes and store naive UTC
(:func:`wa_common.clock.naive_utc`), as the columns are declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wa_stats.models import (
    InstanceRow,
    LimitEventRow,
    LimitRow,
    ProcessedEvent,
    UsageDaily,
    UserDaily,
    UserRow,
)

# The ORM classes' tables (``__table__`` is typed as a FromClause; these are Tables).
usage_t: Table = UsageDaily.__table__  # type: ignore[assignment]
user_daily_t: Table = UserDaily.__table__  # type: ignore[assignment]
processed_t: Table = ProcessedEvent.__table__  # type: ignore[assignment]
instances_t: Table = InstanceRow.__table__  # type: ignore[assignment]
users_t: Table = UserRow.__table__  # type: ignore[assignment]
limits_t: Table = LimitRow.__table__  # type: ignore[assignment]
limit_events_t: Table = LimitEventRow.__table__  # type: ignore[assignment]


class Store:
    """One engine: transactions, and ``INSERT`` in the engine's dialect."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    def insert(self, table: Any) -> Any:
        """``INSERT`` with ``ON CONFLICT`` support in this store's dialect."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (committed on exit, rolled back on an exception)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn


class Repository:
    """Base of the stats repositories: statements over a shared :class:`Store`. Methods taking
    ``conn`` run inside the caller's transaction; the others open their own."""

    def __init__(self, store: Store) -> None:
        self.store = store
