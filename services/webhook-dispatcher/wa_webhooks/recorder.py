"""Attempts recorded by group commit: concurrent attempts that end in the same window are logged,
and their deliveries moved on, in one transaction (``batch_writes.BatchWrites.record_attempts``)."""

from __future__ import annotations

from wa_common.batching import GroupCommit
from wa_webhooks.batch_writes import AttemptRecord, BatchWrites


class AttemptRecorder:
    """``await recorder.record(AttemptRecord(...)) -> moved``: whether the delivery was moved on
    (False when its lease is no longer ours or it is no longer pending)."""

    def __init__(self, writes: BatchWrites, *, max_window: int = 256) -> None:
        self._batch: GroupCommit[AttemptRecord, bool] = GroupCommit(
            writes.record_attempts, name="webhook_attempts", max_items=max_window
        )

    async def record(self, record: AttemptRecord) -> bool:
        """Record one attempt with the window's others; raises the store's error of the window
        (nothing of it was written: the delivery is attempted again after its lease)."""
        return await self._batch.submit(record)
