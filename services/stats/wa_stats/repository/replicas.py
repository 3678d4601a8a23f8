"""Stats' replicas of instances and users, kept from their events (owners, names, connection
state, whether a user is active): each write keeps the newest state it has seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import naive_utc
from wa_stats.repository.base import Repository, instances_t, users_t


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    user_id: str
    name: str
    deleted: bool
    connected: bool


def _instance(row: Any) -> InstanceInfo:
    return InstanceInfo(
        instance_id=row["instance_id"],
        user_id=row["user_id"],
        name=row["name"] or "",
        deleted=bool(row["deleted"]),
        connected=bool(row["connected"]),
    )


def _existing(table: Any, flag: Any) -> Any:
    """``(rows not deleted, those of them with ``flag`` true)`` of ``table``."""
    flagged = func.coalesce(func.sum(case((flag.is_(True), 1), else_=0)), 0)
    return select(func.count(), flagged).where(table.c.deleted.is_(False))


class ReplicaRepository(Repository):
    """``stats_instances`` and ``stats_users``."""

    # --- instances ----------------------------------------------------------------------------

    async def instance(self, conn: AsyncConnection, instance_id: str) -> InstanceInfo | None:
        row = (
            (await conn.execute(select(instances_t).where(instances_t.c.instance_id == instance_id)))
            .mappings()
            .first()
        )
        return _instance(row) if row else None

    async def instances_named(self, conn: AsyncConnection, ids: list[str]) -> dict[str, InstanceInfo]:
        if not ids:
            return {}
        rows = (await conn.execute(select(instances_t).where(instances_t.c.instance_id.in_(ids)))).mappings()
        return {r["instance_id"]: _instance(r) for r in rows}

    async def instances_of(self, conn: AsyncConnection, user_id: str) -> list[InstanceInfo]:
        """Instances the user owns now (not deleted)."""
        rows = (
            await conn.execute(
                select(instances_t).where(instances_t.c.user_id == user_id, instances_t.c.deleted.is_(False))
            )
        ).mappings()
        return [_instance(r) for r in rows]

    async def owned_instance_count(self, conn: AsyncConnection, user_id: str) -> int:
        stmt = select(func.count()).where(instances_t.c.user_id == user_id, instances_t.c.deleted.is_(False))
        return int((await conn.execute(stmt)).scalar_one())

    async def upsert_instance(
        self, conn: AsyncConnection, instance_id: str, user_id: str, name: str, snapshot_at: str
    ) -> None:
        """Store an ``instance.created/updated`` snapshot unless a newer one is stored."""
        stmt = self.store.insert(instances_t).values(
            instance_id=instance_id, user_id=user_id, name=name, snapshot_at=snapshot_at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={"user_id": stmt.excluded.user_id, "name": stmt.excluded.name, "snapshot_at": snapshot_at},
            where=or_(instances_t.c.snapshot_at.is_(None), instances_t.c.snapshot_at <= snapshot_at),
        )
        await conn.execute(stmt)

    async def delete_instance(self, conn: AsyncConnection, instance_id: str, user_id: str) -> None:
        stmt = self.store.insert(instances_t).values(instance_id=instance_id, user_id=user_id, deleted=True)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["instance_id"], set_={"deleted": True}))

    async def set_connected(
        self, conn: AsyncConnection, instance_id: str, user_id: str, connected: bool, at: datetime
    ) -> None:
        """Record the connection state unless a newer one is stored."""
        at = naive_utc(at)
        stmt = self.store.insert(instances_t).values(
            instance_id=instance_id, user_id=user_id, connected=connected, status_at=at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id"],
            set_={"connected": connected, "status_at": at},
            where=or_(instances_t.c.status_at.is_(None), instances_t.c.status_at <= at),
        )
        await conn.execute(stmt)

    # --- users --------------------------------------------------------------------------------

    async def upsert_user(
        self, conn: AsyncConnection, user_id: str, *, active: bool, role: str, deleted: bool, at: datetime
    ) -> None:
        """Store a ``user.*`` event's state unless a newer one is stored (deletion is final)."""
        at = naive_utc(at)
        stmt = self.store.insert(users_t).values(
            user_id=user_id, active=active, role=role, deleted=deleted, changed_at=at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "active": active,
                "role": role,
                "deleted": or_(users_t.c.deleted, literal(deleted)),
                "changed_at": at,
            },
            where=or_(users_t.c.changed_at.is_(None), users_t.c.changed_at <= at),
        )
        await conn.execute(stmt)

    async def system_counts(self, conn: AsyncConnection) -> tuple[int, int, int, int]:
        """``(instances, connected instances, users, active users)`` that exist now."""
        instances = (await conn.execute(_existing(instances_t, instances_t.c.connected))).one()
        users = (await conn.execute(_existing(users_t, users_t.c.active))).one()
        return int(instances[0]), int(instances[1]), int(users[0]), int(users[1])
