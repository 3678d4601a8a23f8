"""Shard leases and worker membership in the worker's SQL store.

A lease row ``(shard, owner, epoch, expires_at)`` says who may run shard ``shard``'s sessions
until ``expires_at`` (Unix seconds, UTC wall clock of the writer: workers must run NTP-synced
clocks; the safety margin ``WORKER_LEASE_SAFETY_S`` absorbs small skew). Every change of owner
increments ``epoch``. Acquisition and renewal are single conditional ``UPDATE`` statements, so
two workers can never both succeed (PostgreSQL and SQLite alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wa_session_worker.models import shard_leases, workers


def wall_clock() -> float:
    """Current UTC time in Unix seconds (the lease clock)."""
    return time.time()


@dataclass(frozen=True)
class Lease:
    shard: int
    owner: str | None
    epoch: int
    expires_at: float


@dataclass(frozen=True)
class Member:
    id: str
    host: str
    port: int
    started_at: float
    heartbeat_at: float
    sessions: int


class LeaseStore:
    """Lease and membership queries. All times are Unix seconds."""

    def __init__(self, engine: AsyncEngine, shard_count: int) -> None:
        self.engine = engine
        self.shard_count = shard_count

    async def ensure_rows(self) -> None:
        """Create the lease rows ``0..S-1`` that do not exist yet (concurrent-safe)."""
        async with self.engine.connect() as conn:
            existing = set((await conn.execute(select(shard_leases.c.shard))).scalars())
        for shard in range(self.shard_count):
            if shard in existing:
                continue
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        insert(shard_leases).values(shard=shard, owner=None, epoch=0, expires_at=0.0)
                    )
            except IntegrityError:
                pass  # another worker created it

    async def leases(self) -> list[Lease]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(shard_leases).where(shard_leases.c.shard < self.shard_count))
            ).all()
        return [Lease(r.shard, r.owner, r.epoch, r.expires_at) for r in rows]

    async def acquire(self, shard: int, owner: str, ttl_s: float) -> int | None:
        """Take ``shard`` if it is free or expired; returns the new epoch, or ``None``."""
        now = wall_clock()
        t = shard_leases
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.shard == shard, or_(t.c.owner.is_(None), t.c.expires_at < now))
                .values(owner=owner, epoch=t.c.epoch + 1, expires_at=now + ttl_s)
            )
            if result.rowcount != 1:
                return None
            epoch = (await conn.execute(select(t.c.epoch).where(t.c.shard == shard))).scalar_one()
        return int(epoch)

    async def renew(self, held: dict[int, int], owner: str, ttl_s: float) -> set[int]:
        """Extend the leases ``{shard: epoch}`` still held by ``owner``; returns those renewed."""
        if not held:
            return set()
        now = wall_clock()
        t = shard_leases
        renewed: set[int] = set()
        async with self.engine.begin() as conn:
            for shard, epoch in held.items():
                result = await conn.execute(
                    update(t)
                    .where(t.c.shard == shard, t.c.owner == owner, t.c.epoch == epoch, t.c.expires_at >= now)
                    .values(expires_at=now + ttl_s)
                )
                if result.rowcount == 1:
                    renewed.add(shard)
        return renewed

    async def release(self, shard: int, owner: str, epoch: int) -> bool:
        """Give ``shard`` up (only if still held by ``owner`` at ``epoch``)."""
        t = shard_leases
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(t)
                .where(and_(t.c.shard == shard, t.c.owner == owner, t.c.epoch == epoch))
                .values(owner=None, expires_at=0.0)
            )
        return result.rowcount == 1

    async def heartbeat(self, member: Member) -> None:
        """Insert or refresh this worker's membership row."""
        values = {
            "host": member.host,
            "port": member.port,
            "heartbeat_at": member.heartbeat_at,
            "sessions": member.sessions,
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(update(workers).where(workers.c.id == member.id).values(**values))
            if result.rowcount == 1:
                return
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(workers).values(id=member.id, started_at=member.started_at, **values)
                )
        except IntegrityError:
            pass

    async def members(self) -> list[Member]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(workers).order_by(workers.c.id))).all()
        return [Member(r.id, r.host, r.port, r.started_at, r.heartbeat_at, r.sessions) for r in rows]

    async def leave(self, worker_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker_id))

    async def forget_dead(self, older_than: float) -> None:
        """Delete membership rows not refreshed since ``older_than`` (tidying only)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(workers).where(workers.c.heartbeat_at < older_than))
