"""Retention of the outbox: finished deliveries older than ``WEBHOOKS_RETENTION_DAYS`` are
deleted with their attempts (``housekeeping.run_retention`` calls this in batches)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from wa_common.schemas.status import DeliveryStatus
from wa_webhooks.models import Attempt, Delivery
from wa_webhooks.store import Store


class RetentionStore(Store):
    async def prune_finished(self, before: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished deliveries (delivered, failed, cancelled) that
        finished before ``before``, with their attempts; returns how many. Pending deliveries
        are never pruned."""
        async with self.sessions() as s:
            ids = list(
                (
                    await s.execute(
                        select(Delivery.id)
                        .where(
                            Delivery.status != DeliveryStatus.PENDING,
                            Delivery.finished_at.is_not(None),
                            Delivery.finished_at < before,
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
