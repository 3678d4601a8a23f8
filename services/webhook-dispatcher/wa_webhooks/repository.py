"""Queries of the webhooks store (settings replica, outbox, attempts). Times in epoch ms (UTC).

Claiming is safe with several dispatcher replicas on one PostgreSQL store: due rows are picked
with ``SELECT ... FOR UPDATE SKIP LOCKED`` and leased (``locked_until``, ``lock_token``) in the
same statement; only the holder of the token may record an attempt. On SQLite (one embedded
process) ``FOR UPDATE`` is omitted and the single writer serialises the same statements.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from wa_common.db import session_factory
from wa_common.ids import new_id
from wa_common.schemas.events import InstanceSnapshot
from wa_webhooks.models import Attempt, Delivery, Endpoint


def now_ms() -> int:
    return int(time.time() * 1000)


def _parse_iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _newer(incoming: str, stored: str) -> bool:
    a, b = _parse_iso(incoming), _parse_iso(stored)
    if a is None or b is None:
        return incoming >= stored
    return a >= b


@dataclass(frozen=True)
class NewDelivery:
    event_id: str
    instance_id: str
    user_id: str | None
    event: str
    url: str | None
    body: str
    max_retries: int
    occurred_at: int


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    instance_id: str
    user_id: str | None
    event: str
    body: str
    attempt_count: int
    occurred_at: int
    lock_token: str
    locked_until: int = 0  # epoch ms when the lease taken by the claim runs out


class Repository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[Any] = session_factory(engine)
        self.dialect = engine.dialect.name

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # --- settings replica ---------------------------------------------------------------------

    async def apply_snapshot(self, snap: InstanceSnapshot) -> bool:
        """Store the snapshot unless a newer one (or a tombstone) is stored; True if applied."""
        ws = snap.webhook_settings
        values = dict(
            instance_id=snap.instance_id,
            user_id=snap.user_id,
            url=snap.webhook_url,
            enabled=snap.webhook_enabled,
            notify_received=ws.notify_received,
            notify_sent=ws.notify_sent,
            notify_delivery=ws.notify_delivery,
            notify_read=ws.notify_read,
            max_retries=ws.max_retries,
            retry_interval_ms=ws.retry_interval,
            secret=ws.secret,
            headers=dict(ws.headers),
            updated_at=snap.updated_at,
            deleted=False,
        )
        async with self.sessions.begin() as s:
            current = (
                await s.execute(
                    select(Endpoint).where(Endpoint.instance_id == snap.instance_id).with_for_update()
                )
            ).scalar_one_or_none()
            if current is None:
                await s.execute(self._insert(Endpoint).values(**values).on_conflict_do_nothing())
                return True
            if current.deleted or not _newer(snap.updated_at, current.updated_at):
                return False
            for key, value in values.items():
                setattr(current, key, value)
            return True

    async def delete_instance(self, instance_id: str, user_id: str) -> int:
        """Tombstone the instance and cancel its pending deliveries; returns how many."""
        async with self.sessions.begin() as s:
            # An upsert: a snapshot of the same instance (or a repeated deletion) being stored
            # concurrently must not make this fail on the primary key.
            tombstone: dict[str, Any] = dict(
                instance_id=instance_id,
                user_id=user_id,
                url=None,
                enabled=False,
                notify_received=False,
                notify_sent=False,
                notify_delivery=False,
                notify_read=False,
                max_retries=0,
                retry_interval_ms=60000,
                secret=None,
                headers={},
                updated_at="9999-12-31T23:59:59.999Z",
                deleted=True,
            )
            await s.execute(
                self._insert(Endpoint)
                .values(**tombstone)
                .on_conflict_do_update(
                    index_elements=[Endpoint.instance_id],
                    set_={"deleted": True, "enabled": False, "secret": None},
                )
            )
            result = await s.execute(
                update(Delivery)
                .where(Delivery.instance_id == instance_id, Delivery.status == "pending")
                .values(status="cancelled", last_error="instance deleted", finished_at=now_ms())
            )
            return int(result.rowcount or 0)

    async def endpoint(self, instance_id: str) -> Endpoint | None:
        async with self.sessions() as s:
            return await s.get(Endpoint, instance_id)

    async def endpoints(self, instance_ids: Sequence[str]) -> dict[str, Endpoint]:
        async with self.sessions() as s:
            rows = (
                await s.execute(select(Endpoint).where(Endpoint.instance_id.in_(list(instance_ids))))
            ).scalars()
            return {e.instance_id: e for e in rows}

    async def user_endpoints(self, user_id: str) -> list[Endpoint]:
        """Live (not deleted) instances of ``user_id`` with webhooks enabled."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Endpoint).where(
                    Endpoint.user_id == user_id, Endpoint.deleted.is_(False), Endpoint.enabled.is_(True)
                )
            )
            return list(rows.scalars())

    # --- outbox ---------------------------------------------------------------------------------

    async def enqueue(self, items: Sequence[NewDelivery], *, redelivery_of: str | None = None) -> list[str]:
        """Insert deliveries, due now; an (event, instance) pair already present is skipped.

        Returns the ids of the rows actually inserted (idempotent on the event id).
        """
        inserted: list[str] = []
        if not items:
            return inserted
        now = now_ms()
        async with self.sessions.begin() as s:
            for item in items:
                delivery_id = new_id()
                stmt = (
                    self._insert(Delivery)
                    .values(
                        id=delivery_id,
                        event_id=item.event_id,
                        instance_id=item.instance_id,
                        user_id=item.user_id,
                        event=item.event,
                        url=item.url,
                        body=item.body,
                        status="pending",
                        attempt_count=0,
                        max_retries=item.max_retries,
                        next_attempt_at=now,
                        occurred_at=item.occurred_at,
                        created_at=now,
                        redelivery_of=redelivery_of,
                    )
                    .on_conflict_do_nothing()
                )
                result = await s.execute(stmt)
                if result.rowcount:
                    inserted.append(delivery_id)
        return inserted

    async def claim(
        self, limit: int, lease_ms: int, *, exclude_instances: Sequence[str] = ()
    ) -> list[Claimed]:
        """Lease up to ``limit`` due pending deliveries for ``lease_ms`` (oldest due first),
        skipping those of ``exclude_instances``."""
        now = now_ms()
        token = new_id()
        due = (
            select(Delivery.id)
            .where(
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
                or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
        )
        if exclude_instances:
            due = due.where(Delivery.instance_id.not_in(list(exclude_instances)))
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(Delivery)
            .where(Delivery.id.in_(due.scalar_subquery()))
            .values(locked_until=now + lease_ms, lock_token=token)
            .returning(
                Delivery.id,
                Delivery.event_id,
                Delivery.instance_id,
                Delivery.user_id,
                Delivery.event,
                Delivery.body,
                Delivery.attempt_count,
                Delivery.occurred_at,
            )
            .execution_options(synchronize_session=False)
        )
        async with self.sessions.begin() as s:
            rows = (await s.execute(stmt)).all()
        return [
            Claimed(
                id=r.id,
                event_id=r.event_id,
                instance_id=r.instance_id,
                user_id=r.user_id,
                event=r.event,
                body=r.body,
                attempt_count=r.attempt_count,
                occurred_at=r.occurred_at,
                lock_token=token,
                locked_until=now + lease_ms,
            )
            for r in rows
        ]

    async def renew(self, delivery_id: str, token: str, lease_ms: int) -> bool:
        """Extend our lease; False if the delivery is no longer ours or no longer pending."""
        async with self.sessions.begin() as s:
            result = await s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.lock_token == token, Delivery.status == "pending")
                .values(locked_until=now_ms() + lease_ms)
            )
            return bool(result.rowcount)

    async def release_many(self, claimed: Sequence[Claimed], *, delay_ms: int) -> None:
        """Give the leases of ``claimed`` back without an attempt (one statement per lease
        token); they are due again after ``delay_ms``."""
        by_token: dict[str, list[str]] = {}
        for c in claimed:
            by_token.setdefault(c.lock_token, []).append(c.id)
        async with self.sessions.begin() as s:
            for token, ids in by_token.items():
                await s.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), Delivery.lock_token == token)
                    .values(locked_until=None, lock_token=None, next_attempt_at=now_ms() + delay_ms)
                )

    async def cancel(self, delivery_id: str, token: str, reason: str) -> None:
        async with self.sessions.begin() as s:
            await s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.lock_token == token, Delivery.status == "pending")
                .values(status="cancelled", last_error=reason, finished_at=now_ms(), locked_until=None)
            )

    async def record_attempt(
        self,
        claimed: Claimed,
        *,
        url: str,
        started_at: int,
        duration_ms: int,
        status_code: int | None,
        outcome: str,
        error: str | None,
        new_status: str,
        next_attempt_at: int | None,
    ) -> bool:
        """Log the attempt and move the delivery on (``pending`` with a next time, ``delivered``
        or ``failed``) if we still hold its lease; returns whether the delivery was updated."""
        number = claimed.attempt_count + 1
        async with self.sessions.begin() as s:
            s.add(
                Attempt(
                    delivery_id=claimed.id,
                    number=number,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    outcome=outcome,
                    error=error,
                )
            )
            values: dict[str, Any] = dict(
                attempt_count=number,
                last_status_code=status_code,
                last_error=error,
                url=url,
                locked_until=None,
                lock_token=None,
                status=new_status,
            )
            if new_status == "pending":
                assert next_attempt_at is not None
                values["next_attempt_at"] = next_attempt_at
            else:
                values["finished_at"] = now_ms()
            result = await s.execute(
                update(Delivery)
                .where(
                    Delivery.id == claimed.id,
                    Delivery.lock_token == claimed.lock_token,
                    Delivery.status == "pending",
                )
                .values(**values)
            )
            return bool(result.rowcount)

    # --- reads ----------------------------------------------------------------------------------

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self.sessions() as s:
            return await s.get(Delivery, delivery_id)

    async def list_deliveries(
        self, instance_id: str, *, status: str | None, limit: int, skip: int
    ) -> tuple[list[Delivery], dict[str, list[Attempt]], int]:
        """A page of the instance's deliveries (newest first), their attempts, and the total."""
        conds = [Delivery.instance_id == instance_id]
        if status is not None:
            conds.append(Delivery.status == status)
        async with self.sessions() as s:
            total = int(
                (await s.execute(select(func.count()).where(and_(*conds)).select_from(Delivery))).scalar_one()
            )
            rows = list(
                (
                    await s.execute(
                        select(Delivery).where(*conds).order_by(Delivery.id.desc()).limit(limit).offset(skip)
                    )
                ).scalars()
            )
            attempts: dict[str, list[Attempt]] = {d.id: [] for d in rows}
            if rows:
                for a in (
                    await s.execute(
                        select(Attempt)
                        .where(Attempt.delivery_id.in_(list(attempts)))
                        .order_by(Attempt.delivery_id, Attempt.number, Attempt.id)
                    )
                ).scalars():
                    attempts[a.delivery_id].append(a)
        return rows, attempts, total

    async def prune_finished(self, before_ms: int, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished deliveries (delivered, failed, cancelled) whose
        ``finished_at`` (epoch ms) is before ``before_ms``, with their attempts; returns how many.
        Pending deliveries are never pruned."""
        async with self.sessions() as s:
            ids = list(
                (
                    await s.execute(
                        select(Delivery.id)
                        .where(
                            Delivery.status != "pending",
                            Delivery.finished_at.is_not(None),
                            Delivery.finished_at < before_ms,
                        )
                        .order_by(Delivery.finished_at)
                        .limit(limit)
                    )
                ).scalars()
            )
            if ids:
                # Attempts explicitly: SQLite enforces ON DELETE CASCADE only with a pragma.
                await s.execute(delete(Attempt).where(Attempt.delivery_id.in_(ids)))
                await s.execute(delete(Delivery).where(Delivery.id.in_(ids)))
                await s.commit()
        return len(ids)

    async def outbox_stats(self) -> tuple[int, int | None]:
        """(pending deliveries, creation time of the oldest pending one in epoch ms or None)."""
        async with self.sessions() as s:
            count, oldest = (
                await s.execute(
                    select(func.count(), func.min(Delivery.created_at)).where(Delivery.status == "pending")
                )
            ).one()
        return int(count), (int(oldest) if oldest is not None else None)
