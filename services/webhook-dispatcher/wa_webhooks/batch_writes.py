"""The outbox writes of the hot path, one transaction per window of many items (group commit):
new delivery rows (one multi-row ``INSERT``), and attempts with the moves of their deliveries.

Core statements on a pooled connection (no ORM session). On PostgreSQL all the moves of a
window are one ``UPDATE ... FROM unnest(...)``; on SQLite (one embedded process) one statement
per move in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text, update

from wa_common.clock import to_unix_ms
from wa_common.schemas.status import DeliveryStatus
from wa_common.schemas.wire import as_utc
from wa_webhooks.deliveries import AttemptResult, Claimed
from wa_webhooks.models import Attempt, Delivery
from wa_webhooks.store import Store

PENDING = DeliveryStatus.PENDING


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of ``claimed`` (made to ``url``) and what its delivery becomes: ``status``
    (``pending`` again at ``next_attempt_at``, ``delivered`` or ``failed``)."""

    claimed: Claimed
    result: AttemptResult
    url: str
    status: DeliveryStatus
    next_attempt_at: datetime | None = None


def _ms(at: datetime | None) -> int | None:
    return to_unix_ms(as_utc(at)) if at is not None else None


_MOVE_PG = text(
    """
    UPDATE webhook_deliveries AS d
    SET attempt_count = v.number, last_status_code = v.status_code, last_error = v.error,
        url = v.url, locked_until = NULL, lock_token = NULL, status = v.status,
        next_attempt_at = COALESCE(v.next_at, d.next_attempt_at),
        finished_at = COALESCE(v.finished_at, d.finished_at)
    FROM unnest(
        CAST(:ids AS varchar[]), CAST(:tokens AS varchar[]), CAST(:numbers AS int[]),
        CAST(:codes AS int[]), CAST(:errors AS text[]), CAST(:urls AS text[]),
        CAST(:statuses AS varchar[]), CAST(:next_ats AS bigint[]), CAST(:finished AS bigint[])
    ) AS v(id, token, number, status_code, error, url, status, next_at, finished_at)
    WHERE d.id = v.id AND d.lock_token = v.token AND d.status = 'pending'
    RETURNING d.id
    """
)


class BatchWrites(Store):
    """Many-item writes of ``webhook_deliveries`` and ``webhook_attempts``."""

    async def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert delivery rows (complete column dicts of :class:`~wa_webhooks.models.Delivery`,
        ``id`` included) in one transaction; a row whose (event, instance) pair is already
        present is skipped. Returns the ids actually inserted. Raises the store's errors (then
        nothing was inserted)."""
        if not rows:
            return set()
        stmt = self.insert(Delivery).on_conflict_do_nothing().returning(Delivery.id)
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt, list(rows))
            return {r[0] for r in result}

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]:
        """Log every attempt and move each delivery on, if its lease is still ours, in one
        transaction; returns per record whether its delivery was moved. Raises the store's errors
        (then nothing was written)."""
        if not records:
            return []
        now = self.clock()
        attempts = [
            dict(
                delivery_id=r.claimed.id,
                number=r.claimed.attempt_count + 1,
                started_at=r.result.started_at,
                duration_ms=int(r.result.duration_s * 1000),
                status_code=r.result.status_code,
                outcome=r.result.outcome,
                error=r.result.error,
            )
            for r in records
        ]
        async with self.engine.begin() as conn:
            await conn.execute(insert(Attempt), attempts)
            if self.dialect == "postgresql":
                moved = await self._move_pg(conn, records, now)
            else:
                moved = await self._move_each(conn, records, now)
        return [r.claimed.id in moved for r in records]

    @staticmethod
    async def _move_pg(conn: Any, records: Sequence[AttemptRecord], now: datetime) -> set[str]:
        finished = _ms(now)
        params = dict(
            ids=[r.claimed.id for r in records],
            tokens=[r.claimed.lock_token for r in records],
            numbers=[r.claimed.attempt_count + 1 for r in records],
            codes=[r.result.status_code for r in records],
            errors=[r.result.error for r in records],
            urls=[r.url for r in records],
            statuses=[str(r.status) for r in records],
            next_ats=[_ms(r.next_attempt_at) if r.status == PENDING else None for r in records],
            finished=[None if r.status == PENDING else finished for r in records],
        )
        return {row[0] for row in await conn.execute(_MOVE_PG, params)}

    @staticmethod
    async def _move_each(conn: Any, records: Sequence[AttemptRecord], now: datetime) -> set[str]:
        moved: set[str] = set()
        for r in records:
            c = r.claimed
            values: dict[str, Any] = dict(
                attempt_count=c.attempt_count + 1,
                last_status_code=r.result.status_code,
                last_error=r.result.error,
                url=r.url,
                locked_until=None,
                lock_token=None,
                status=r.status,
            )
            if r.status == PENDING:
                values["next_attempt_at"] = r.next_attempt_at
            else:
                values["finished_at"] = now
            result = await conn.execute(
                update(Delivery)
                .where(Delivery.id == c.id, Delivery.lock_token == c.lock_token, Delivery.status == PENDING)
                .values(**values)
            )
            if result.rowcount:
                moved.add(c.id)
        return moved
