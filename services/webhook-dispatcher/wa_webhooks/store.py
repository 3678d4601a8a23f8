"""What every query class of the webhooks store shares: the engine, sessions, the clock and the
dialect's ``INSERT ... ON CONFLICT``.

Times are aware UTC ``datetime`` values in and out (the columns convert: ``models.EpochMs``).
One PostgreSQL store can serve several dispatcher replicas; SQLite serves one embedded process
(its single writer serialises what PostgreSQL locks).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from wa_common.clock import Clock, utcnow
from wa_common.db import session_factory


class Store:
    """Base of the query classes (``endpoints``, ``deliveries``, ``retention``)."""

    def __init__(
        self, engine: AsyncEngine, *, sessions: async_sessionmaker[Any] | None = None, clock: Clock = utcnow
    ) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[Any] = sessions or session_factory(engine)
        self.dialect = engine.dialect.name
        self.clock = clock

    def insert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` (with ``on_conflict_do_nothing``/``_do_update``)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
