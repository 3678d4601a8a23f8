"""The outbox: delivery rows and their attempt log.

Claiming is safe with several dispatcher replicas on one PostgreSQL store: due rows are picked
with ``SELECT ... FOR UPDATE SKIP LOCKED`` and leased (``locked_until``, ``lock_token``) in the
same statement; only the holder of the token may record an attempt. On SQLite (one embedded
process) ``FOR UPDATE`` is omitted and the single writer serialises the same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Update, and_, func, or_, select, update

from wa_common.ids import new_id
from wa_common.schemas.status import DeliveryStatus
from wa_webhooks.models import Attempt, Delivery, Endpoint
from wa_webhooks.store import Store

if TYPE_CHECKING:
    from wa_webhooks.replica import EndpointView

PENDING = DeliveryStatus.PENDING


@dataclass(frozen=True)
class NewDelivery:
    event_id: str
    instance_id: str
    user_id: str | None
    event: str
    url: str | None
    body: str
    max_retries: int
    occurred_at: datetime

    @classmethod
    def to(
        cls, ep: Endpoint | EndpointView, *, event_id: str, event: str, body: str, occurred_at: datetime
    ) -> NewDelivery:
        """``body`` for ``ep``'s URL, with its ``maxRetries``."""
        return cls(event_id, ep.instance_id, ep.user_id, event, ep.url, body, ep.max_retries, occurred_at)


@dataclass(frozen=True)
class Claimed:
    """A pending delivery leased to this process until ``locked_until`` (token ``lock_token``)."""

    id: str
    event_id: str
    instance_id: str
    user_id: str | None
    event: str
    body: str
    attempt_count: int
    occurred_at: datetime
    lock_token: str
    locked_until: datetime


_LEASE_FIELDS = ("lock_token", "locked_until")
_CLAIMED_COLUMNS = [getattr(Delivery, f.name) for f in fields(Claimed) if f.name not in _LEASE_FIELDS]


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt gave: the status code (``None`` without an answer), the outcome
    (``2xx`` ... ``5xx``, ``timeout``, ``error``), an error text safe to show, its start and
    duration."""

    status_code: int | None
    outcome: str
    error: str | None
    started_at: datetime
    duration_s: float


def cancel_pending(*where: ColumnElement[bool], reason: str, at: datetime) -> Update:
    """The statement cancelling the pending deliveries matching ``where`` (``reason`` as their
    last error)."""
    return (
        update(Delivery)
        .where(*where, Delivery.status == PENDING)
        .values(status=DeliveryStatus.CANCELLED, last_error=reason, finished_at=at, locked_until=None)
    )


def _leased(c: Claimed) -> ColumnElement[bool]:
    """``c``'s row while it is still pending under ``c``'s lease."""
    return and_(Delivery.id == c.id, Delivery.lock_token == c.lock_token, Delivery.status == PENDING)


class DeliveryStore(Store):
    """Writes and reads of ``webhook_deliveries`` and ``webhook_attempts``."""

    # --- writing --------------------------------------------------------------------------------

    async def enqueue(self, items: Sequence[NewDelivery], *, redelivery_of: str | None = None) -> list[str]:
        """Insert deliveries, due now; an (event, instance) pair already present is skipped.

        Returns the ids of the rows actually inserted (idempotent on the event id).
        """
        inserted: list[str] = []
        if not items:
            return inserted
        now = self.clock()
        async with self.sessions.begin() as s:
            for item in items:
                delivery_id = new_id()
                stmt = (
                    self.insert(Delivery)
                    .values(
                        id=delivery_id,
                        **asdict(item),
                        status=PENDING,
                        attempt_count=0,
                        next_attempt_at=now,
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
        self, limit: int, lease: timedelta, *, exclude_instances: Sequence[str] = ()
    ) -> list[Claimed]:
        """Lease up to ``limit`` due pending deliveries for ``lease`` (oldest due first),
        skipping those of ``exclude_instances``."""
        now = self.clock()
        token, until = new_id(), now + lease
        due = (
            select(Delivery.id)
            .where(
                Delivery.status == PENDING,
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
            .values(locked_until=until, lock_token=token)
            .returning(*_CLAIMED_COLUMNS)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions.begin() as s:
            rows = (await s.execute(stmt)).all()
        return [Claimed(**r._mapping, lock_token=token, locked_until=until) for r in rows]

    async def renew(self, c: Claimed, lease: timedelta) -> bool:
        """Extend our lease of ``c``; False if it is no longer ours or no longer pending."""
        async with self.sessions.begin() as s:
            result = await s.execute(
                update(Delivery).where(_leased(c)).values(locked_until=self.clock() + lease)
            )
            return bool(result.rowcount)

    async def release_many(self, claimed: Sequence[Claimed], *, delay: timedelta) -> None:
        """Give the leases of ``claimed`` back without an attempt (one statement per lease
        token); they are due again after ``delay``."""
        by_token: dict[str, list[str]] = {}
        for c in claimed:
            by_token.setdefault(c.lock_token, []).append(c.id)
        async with self.sessions.begin() as s:
            for token, ids in by_token.items():
                await s.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), Delivery.lock_token == token)
                    .values(locked_until=None, lock_token=None, next_attempt_at=self.clock() + delay)
                )

    async def cancel(self, c: Claimed, reason: str) -> None:
        """Cancel ``c`` (still ours and pending) without an attempt."""
        async with self.sessions.begin() as s:
            await s.execute(
                cancel_pending(
                    Delivery.id == c.id, Delivery.lock_token == c.lock_token, reason=reason, at=self.clock()
                )
            )

    async def record_attempt(
        self,
        c: Claimed,
        result: AttemptResult,
        *,
        url: str,
        status: DeliveryStatus,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Log the attempt (made to ``url``) and move the delivery on to ``status``
        (``pending`` again at ``next_attempt_at``, ``delivered`` or ``failed``) if we still hold
        its lease; returns whether the delivery was updated."""
        number = c.attempt_count + 1
        async with self.sessions.begin() as s:
            s.add(
                Attempt(
                    delivery_id=c.id,
                    number=number,
                    started_at=result.started_at,
                    duration_ms=int(result.duration_s * 1000),
                    status_code=result.status_code,
                    outcome=result.outcome,
                    error=result.error,
                )
            )
            values: dict[str, Any] = dict(
                attempt_count=number,
                last_status_code=result.status_code,
                last_error=result.error,
                url=url,
                locked_until=None,
                lock_token=None,
                status=status,
            )
            if status == PENDING:
                assert next_attempt_at is not None
                values["next_attempt_at"] = next_attempt_at
            else:
                values["finished_at"] = self.clock()
            updated = await s.execute(update(Delivery).where(_leased(c)).values(**values))
            return bool(updated.rowcount)

    # --- reading --------------------------------------------------------------------------------

    async def get(self, delivery_id: str) -> Delivery | None:
        async with self.sessions() as s:
            return await s.get(Delivery, delivery_id)

    async def page(
        self, instance_id: str, *, status: DeliveryStatus | None, limit: int, skip: int
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

    async def pending_stats(self) -> tuple[int, datetime | None]:
        """(pending deliveries, creation time of the oldest pending one or ``None``)."""
        async with self.sessions() as s:
            count, oldest = (
                await s.execute(
                    select(func.count(), func.min(Delivery.created_at)).where(Delivery.status == PENDING)
                )
            ).one()
        return int(count), oldest
