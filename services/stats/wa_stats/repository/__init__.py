"""SQL of the stats store (SQLAlchemy Core, async; the same statements on PostgreSQL and SQLite),
one repository per part of the store over one :class:`~wa_stats.repository.base.Store`:

- :mod:`~wa_stats.repository.usage`: counters and the ids of counted events;
- :mod:`~wa_stats.repository.replicas`: instances and users, as their events describe them;
- :mod:`~wa_stats.repository.limits`: per-user limits and the usage they compare against;
- :mod:`~wa_stats.repository.outbox`: the ``limit_exceeded`` events to publish.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from wa_stats.repository.base import Store
from wa_stats.repository.limits import LimitsRepository, LimitUsage
from wa_stats.repository.outbox import OutboxRepository, PendingLimitEvent
from wa_stats.repository.replicas import InstanceInfo, ReplicaRepository
from wa_stats.repository.usage import COUNTERS, DailyKey, UsageKey, UsageRepository

__all__ = [
    "COUNTERS",
    "DailyKey",
    "InstanceInfo",
    "LimitUsage",
    "LimitsRepository",
    "OutboxRepository",
    "PendingLimitEvent",
    "ReplicaRepository",
    "StatsRepository",
    "Store",
    "UsageKey",
    "UsageRepository",
]


class StatsRepository(Store):
    """The stats store: its transactions (:meth:`write`, :meth:`read`) and its repositories."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.usage = UsageRepository(self)
        self.replicas = ReplicaRepository(self)
        self.limits = LimitsRepository(self)
        self.outbox = OutboxRepository(self)
