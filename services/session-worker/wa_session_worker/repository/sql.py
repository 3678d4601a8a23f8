"""SQL implementation of :class:`Repository` (SQLAlchemy Core, asyncpg or aiosqlite)."""

from __future__ import annotations

from dataclasses import fields as dc_fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wa_common.db import ping, provider_of
from wa_common.ids import new_id
from wa_common.schemas.envelope import utcnow
from wa_session_worker import models as m
from wa_session_worker.repository.base import (
    ActivityRec,
    ContactRec,
    EventRec,
    IdempotencyRec,
    InstanceRec,
    MessageRec,
    OutboxRec,
    Repository,
)

R = TypeVar("R")


def _rec(cls: type[R], row: Any) -> R:
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in dc_fields(cls)})  # type: ignore[arg-type]


def _values(rec: Any) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dc_fields(rec)}


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SqlRepository(Repository):
    """The repository on the worker's relational store (``WORKER_DATABASE_URL``)."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.provider = provider_of(url)

    async def ping(self) -> bool:
        return await ping(self.engine)

    async def _insert(self, table: Table, values: dict[str, Any]) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(table).values(**values))
        except IntegrityError:
            return False
        return True

    # Instances -------------------------------------------------------------------------------

    async def create_instance(self, rec: InstanceRec) -> bool:
        return await self._insert(m.instances, _values(rec))

    async def get_instance(self, instance_id: str) -> InstanceRec | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(m.instances).where(m.instances.c.id == instance_id))).first()
        return _rec(InstanceRec, row) if row else None

    async def list_instances(self, user_id: str | None) -> list[InstanceRec]:
        query = select(m.instances).order_by(m.instances.c.created_at, m.instances.c.id)
        if user_id is not None:
            query = query.where(m.instances.c.user_id == user_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_rec(InstanceRec, r) for r in rows]

    async def instances_in_shard(self, shard: int) -> list[InstanceRec]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(m.instances).where(m.instances.c.shard == shard))).all()
        return [_rec(InstanceRec, r) for r in rows]

    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRec | None:
        async with self.engine.begin() as conn:
            if fields:
                await conn.execute(
                    update(m.instances).where(m.instances.c.id == instance_id).values(**fields)
                )
            row = (await conn.execute(select(m.instances).where(m.instances.c.id == instance_id))).first()
        return _rec(InstanceRec, row) if row else None

    async def delete_instance(self, instance_id: str) -> bool:
        async with self.engine.begin() as conn:
            for table in (m.messages, m.contacts, m.activity, m.recent_events, m.idempotency):
                await conn.execute(delete(table).where(table.c.instance_id == instance_id))
            result = await conn.execute(delete(m.instances).where(m.instances.c.id == instance_id))
        return bool(result.rowcount)

    # Messages --------------------------------------------------------------------------------

    async def add_message(self, rec: MessageRec) -> bool:
        return await self._insert(m.messages, _values(rec))

    async def record_message(
        self, rec: MessageRec, event: EventRec | None, pending: OutboxRec | None = None
    ) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(m.messages).values(**_values(rec)))
                await conn.execute(
                    update(m.instances)
                    .where(m.instances.c.id == rec.instance_id)
                    .values(last_activity_at=rec.created_at)
                )
                if event is not None:
                    await conn.execute(insert(m.recent_events).values(**_values(event)))
                if pending is not None:
                    await conn.execute(insert(m.outbox).values(**_values(pending)))
        except IntegrityError:
            return False
        return True

    async def update_message_status(
        self, instance_id: str, message_ids: list[str], status: str, at: datetime, from_statuses: list[str]
    ) -> list[MessageRec]:
        if not message_ids:
            return []
        t = m.messages
        where = and_(t.c.instance_id == instance_id, t.c.message_id.in_(message_ids))
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(t).where(where, t.c.status.in_(from_statuses)))).all()
            if rows:
                await conn.execute(
                    update(t)
                    .where(t.c.id.in_([r.id for r in rows]))
                    .values(status=status, status_updated_at=at, updated_at=at)
                )
        changed = [_rec(MessageRec, r) for r in rows]
        for rec in changed:
            rec.status, rec.status_updated_at, rec.updated_at = status, at, at
        return changed

    async def chat_messages(
        self,
        instance_id: str,
        remote_jid: str,
        *,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[MessageRec], int]:
        t = m.messages
        conds = [t.c.instance_id == instance_id, t.c.remote_jid == remote_jid]
        if start is not None:
            conds.append(t.c.timestamp >= start)
        if end is not None:
            conds.append(t.c.timestamp <= end)
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
            rows = (
                await conn.execute(
                    select(t)
                    .where(*conds)
                    .order_by(t.c.timestamp.desc(), t.c.id.desc())
                    .offset(skip)
                    .limit(limit)
                )
            ).all()
        return [_rec(MessageRec, r) for r in rows], int(total)

    # Contacts --------------------------------------------------------------------------------

    async def upsert_contact(self, instance_id: str, remote_jid: str, **fields: Any) -> ContactRec:
        t = m.contacts
        now = utcnow()
        where = and_(t.c.instance_id == instance_id, t.c.remote_jid == remote_jid)
        for _ in range(3):
            async with self.engine.begin() as conn:
                row = (await conn.execute(select(t).where(where))).first()
                if row is not None:
                    changes = {k: v for k, v in fields.items() if v is not None}
                    await conn.execute(update(t).where(where).values(**changes, updated_at=now))
                    row = (await conn.execute(select(t).where(where))).first()
                    return _rec(ContactRec, row)
            rec = ContactRec(
                id=new_id(),
                instance_id=instance_id,
                remote_jid=remote_jid,
                number=fields.pop("number", None) or remote_jid.split("@", 1)[0],
                created_at=now,
                updated_at=now,
                **{k: v for k, v in fields.items() if v is not None},
            )
            if await self._insert(t, _values(rec)):
                return rec
        raise RuntimeError("contact upsert kept conflicting")

    async def list_contacts(
        self, instance_id: str, *, search: str | None, only_groups: bool, skip: int, limit: int
    ) -> tuple[list[ContactRec], int]:
        t = m.contacts
        conds: list[Any] = [t.c.instance_id == instance_id]
        if only_groups:
            conds.append(t.c.is_group.is_(True))
        if search:
            pattern = _like(search)
            conds.append(
                or_(
                    func.lower(t.c.name).like(pattern, escape="\\"),
                    func.lower(t.c.push_name).like(pattern, escape="\\"),
                    t.c.number.like(pattern, escape="\\"),
                )
            )
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
            rows = (
                await conn.execute(
                    select(t).where(*conds).order_by(t.c.name, t.c.number).offset(skip).limit(limit)
                )
            ).all()
        return [_rec(ContactRec, r) for r in rows], int(total)

    # Activity and events ---------------------------------------------------------------------

    async def add_activity(self, rec: ActivityRec) -> None:
        await self._insert(m.activity, _values(rec))

    async def list_activity(
        self,
        instance_id: str,
        *,
        actions: list[str] | None,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[ActivityRec], int]:
        t = m.activity
        conds: list[Any] = [t.c.instance_id == instance_id]
        if actions:
            conds.append(t.c.action.in_(actions))
        if start is not None:
            conds.append(t.c.created_at >= start)
        if end is not None:
            conds.append(t.c.created_at <= end)
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(t).where(*conds))).scalar_one()
            rows = (
                await conn.execute(
                    select(t)
                    .where(*conds)
                    .order_by(t.c.created_at.desc(), t.c.id.desc())
                    .offset(skip)
                    .limit(limit)
                )
            ).all()
        return [_rec(ActivityRec, r) for r in rows], int(total)

    async def add_event(self, rec: EventRec) -> None:
        await self._insert(m.recent_events, _values(rec))

    async def stage_event(self, kept: EventRec | None, pending: OutboxRec) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(m.outbox).values(**_values(pending)))
                if kept is not None:
                    await conn.execute(insert(m.recent_events).values(**_values(kept)))
        except IntegrityError:
            return  # staged before (a retried step): the first entry stands

    async def outbox_due(self, shards: list[int], before: datetime, limit: int) -> list[OutboxRec]:
        if not shards:
            return []
        t = m.outbox
        query = (
            select(t)
            .where(t.c.shard.in_(shards), t.c.created_at < before)
            .order_by(t.c.created_at, t.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_rec(OutboxRec, r) for r in rows]

    async def outbox_done(self, ids: list[str]) -> None:
        if ids:
            async with self.engine.begin() as conn:
                await conn.execute(delete(m.outbox).where(m.outbox.c.id.in_(ids)))

    async def recent_events(
        self, instance_id: str, *, since: datetime | None, types: list[str] | None, limit: int
    ) -> tuple[list[EventRec], bool]:
        t = m.recent_events
        conds: list[Any] = [t.c.instance_id == instance_id]
        if since is not None:
            conds.append(t.c.occurred_at > since)
        if types:
            conds.append(t.c.type.in_(types))
        # Without "since" the newest events; with it the oldest after it (continuation).
        if since is None:
            order = (t.c.occurred_at.desc(), t.c.id.desc())
        else:
            order = (t.c.occurred_at.asc(), t.c.id.asc())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t).where(*conds).order_by(*order).limit(limit + 1))).all()
        page = [_rec(EventRec, r) for r in rows[:limit]]
        if since is not None:
            page.reverse()
        return page, len(rows) > limit

    async def prune(self, events_before: datetime, idempotency_before: datetime) -> int:
        async with self.engine.begin() as conn:
            a = await conn.execute(
                delete(m.recent_events).where(m.recent_events.c.occurred_at < events_before)
            )
            b = await conn.execute(
                delete(m.idempotency).where(m.idempotency.c.created_at < idempotency_before)
            )
        return int(a.rowcount or 0) + int(b.rowcount or 0)

    # Idempotency -----------------------------------------------------------------------------

    async def idempotency_begin(self, instance_id: str, key: str, command: str) -> IdempotencyRec | None:
        rec = IdempotencyRec(instance_id, key, command, "pending", None, utcnow())
        if await self._insert(m.idempotency, _values(rec)):
            return None
        t = m.idempotency
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(t).where(t.c.instance_id == instance_id, t.c.key == key))
            ).first()
        return _rec(IdempotencyRec, row) if row else None

    async def idempotency_finish(self, instance_id: str, key: str, reply: dict[str, Any] | None) -> None:
        t = m.idempotency
        where = and_(t.c.instance_id == instance_id, t.c.key == key)
        async with self.engine.begin() as conn:
            if reply is None:
                await conn.execute(delete(t).where(where))
            else:
                await conn.execute(update(t).where(where).values(state="done", reply=reply))
