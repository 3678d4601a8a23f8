"""New deliveries into the outbox by group commit, and straight on to delivery.

Each consumed event submits its deliveries (:meth:`Intake.submit`); everything submitted in the
same window is written in one transaction (``batch_writes.BatchWrites.insert_deliveries``), and
only then do the submitters return (so the bus acks an event only once its rows are committed).
Rows this process has room for are inserted already leased to it (``lock_token``,
``locked_until``: the claim loop of any replica skips them until the lease runs out, e.g. after a
kill -9) and are handed to delivery at once (``hand_over``), with no claim round trip; the others
are inserted due now and unleased, for the claim loop. Idempotent on (event id, instance): a
redelivered event adds and hands over nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from wa_common.batching import GroupCommit
from wa_common.clock import Clock
from wa_common.ids import new_id
from wa_common.schemas.status import DeliveryStatus
from wa_webhooks.batch_writes import BatchWrites
from wa_webhooks.deliveries import Claimed, NewDelivery
from wa_webhooks.replica import EndpointView

Item = tuple[NewDelivery, EndpointView]
HandOver = Callable[[list[tuple[Claimed, EndpointView]]], Awaitable[None]]


class Intake:
    """``await intake.submit(items) -> new rows``; see the module docstring.

    ``room()`` says how many more deliveries this process may take now (``<= 0``: none);
    ``hand_over`` starts the leased new rows; ``wake()`` tells the claim loop about the others.
    ``lease`` is how long a handed-over row stays reserved (renewed before a late attempt).
    """

    def __init__(
        self,
        writes: BatchWrites,
        *,
        lease: timedelta,
        room: Callable[[], int],
        hand_over: HandOver,
        wake: Callable[[], None],
        clock: Clock,
        max_window: int = 512,
    ) -> None:
        self._writes = writes
        self._lease = lease
        self._room = room
        self._hand_over = hand_over
        self._wake = wake
        self._clock = clock
        self._batch: GroupCommit[list[Item], int] = GroupCommit(
            self._flush, name="webhook_intake", max_items=max_window
        )

    async def submit(self, items: Sequence[Item]) -> int:
        """Write ``items`` (delivery, its endpoint) with the window's others; returns how many
        were new. Raises the store's error of the window (nothing of it was written)."""
        if not items:
            return 0
        return await self._batch.submit(list(items))

    async def _flush(self, windows: list[list[Item]]) -> list[int]:
        now = self._clock()
        token, until = new_id(), now + self._lease
        room = self._room()
        rows: list[dict[str, Any]] = []
        picked: dict[str, tuple[int, NewDelivery, EndpointView, bool]] = {}
        seen: set[tuple[str, str]] = set()
        for w, items in enumerate(windows):
            for item, ep in items:
                key = (item.event_id, item.instance_id)
                if key in seen:  # the same event twice in one window: the first one counts
                    continue
                seen.add(key)
                leased = room > 0
                room -= 1
                delivery_id = new_id()
                rows.append(
                    asdict(item)
                    | dict(
                        id=delivery_id,
                        status=DeliveryStatus.PENDING,
                        attempt_count=0,
                        next_attempt_at=now,
                        created_at=now,
                        redelivery_of=None,
                        locked_until=until if leased else None,
                        lock_token=token if leased else None,
                        finished_at=None,
                        last_status_code=None,
                        last_error=None,
                    )
                )
                picked[delivery_id] = (w, item, ep, leased)
        inserted = await self._writes.insert_deliveries(rows)
        counts = [0] * len(windows)
        started: list[tuple[Claimed, EndpointView]] = []
        unleased = False
        for row in rows:
            delivery_id = row["id"]
            if delivery_id not in inserted:
                continue
            w, item, ep, leased = picked[delivery_id]
            counts[w] += 1
            if not leased:
                unleased = True
                continue
            claimed = Claimed(
                id=delivery_id,
                event_id=item.event_id,
                instance_id=item.instance_id,
                user_id=item.user_id,
                event=item.event,
                body=item.body,
                attempt_count=0,
                occurred_at=item.occurred_at,
                lock_token=token,
                locked_until=until,
            )
            started.append((claimed, ep))
        if started:
            await self._hand_over(started)
        if unleased:
            self._wake()
        return counts
