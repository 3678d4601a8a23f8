"""Transactional outbox of the session worker: no stored change loses the event that reports it.

Every event the worker publishes is first written to the ``outbox`` table together with what it
reports (a message's row, a recent-event row: ``Repository.record_message``/``stage_event``),
then published with a broker confirm and forgotten (``outbox_done``, batched by
:class:`Published`). If the worker dies, or the broker refuses or times out, between the commit
and the confirm, the entry stays, and :func:`relay_loop` of the worker that owns the
instance's shard publishes it later: every ``WORKER_OUTBOX_RELAY_INTERVAL_S`` it takes entries
older than ``WORKER_OUTBOX_GRACE_S`` (the normal path forgets them within about 50 ms) and
publishes them in order of creation.

Delivery is therefore at least once: an event confirmed just before a crash, whose entry was not
yet deleted, is published again with the same event id, and consumers deduplicate on it (the
dispatcher's outbox and the stats service both key on ``Event.id``).

With MongoDB (no multi-document transactions on a standalone server) the entry is written
before the change it reports, so a crash in between publishes the event without the change
rather than losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from wa_common.bus import Bus, PublishError, shard_for
from wa_common.clock import Clock, utcnow
from wa_common.logs import describe_exception, get_logger
from wa_common.schemas import Event
from wa_session_worker.metrics import OUTBOX_PENDING, OUTBOX_RELAYED
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import OutboxRec

log = get_logger(__name__)

RELAY_BATCH = 200


def pending(event: Event, shard_count: int, *, clock: Clock = utcnow) -> OutboxRec:
    """The outbox entry of ``event`` (its instance's shard; events about no instance use shard 0),
    created now by ``clock``."""
    shard = shard_for(event.instance_id, shard_count) if event.instance_id else 0
    return OutboxRec(event.id, shard, event.to_bytes().decode(), clock())


class Published:
    """Ids of published events whose entries are deleted in batches (one transaction per
    ``interval_s`` instead of one per event). An entry not yet deleted when the worker dies is
    published again by the relay: at least once, as always."""

    def __init__(self, repo: Repository, *, interval_s: float = 0.05, max_batch: int = 500) -> None:
        self._repo = repo
        self._interval_s = interval_s
        self._max_batch = max_batch
        self._ids: list[str] = []
        self._wake = asyncio.Event()

    def add(self, event_id: str) -> None:
        self._ids.append(event_id)
        if len(self._ids) >= self._max_batch:
            self._wake.set()

    async def flush(self) -> None:
        """Delete the entries collected so far (kept for the next flush if the store fails)."""
        while self._ids:
            batch, self._ids = self._ids[: self._max_batch], self._ids[self._max_batch :]
            try:
                await self._repo.outbox_done(batch)
            except Exception:
                self._ids[:0] = batch
                raise

    async def run(self) -> None:
        """Flush every ``interval_s`` (sooner when a batch is full) until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the relay may publish them again; consumers deduplicate
                log.warning("could not clear outbox entries; retrying", error=str(exc))


async def deliver_all(bus: Bus, events: list[Event], published: Published) -> list[bool]:
    """Publish staged ``events`` in as few messages as the bus batches them
    (:meth:`~wa_common.bus.Bus.publish_events`) and hand the confirmed ones' ids to
    ``published``; per event, ``False`` when its entry stays for the relay. Never raises."""
    errors = await bus.publish_events(events)
    for event, error in zip(events, errors, strict=True):
        if error is None:
            published.add(event.id)
        else:
            log.warning(
                "event kept in the outbox for the relay", event_id=event.id, type=event.type, error=str(error)
            )
    return [error is None for error in errors]


def _safe_error(exc: BaseException) -> str:
    """A log-safe account of a relay failure: an entry's body holds event data (webhook secrets
    in instance snapshots), which a parse error or a driver error would quote."""
    return str(exc) if isinstance(exc, PublishError) else describe_exception(exc)


async def relay_once(
    repo: Repository, bus: Bus, shards: list[int], grace_s: float, *, clock: Clock = utcnow
) -> int:
    """Publish the entries of ``shards`` created more than ``grace_s`` before ``clock()``'s now
    (oldest first); returns how many were published.

    Stops at the first entry the broker does not confirm (order is kept for the next round).
    """
    due = await repo.outbox_due(sorted(shards), clock() - timedelta(seconds=grace_s), RELAY_BATCH)
    OUTBOX_PENDING.set(len(due))
    published: list[str] = []
    try:
        for entry in due:
            event = Event.from_bytes(entry.body)
            await bus.publish_event(event)
            published.append(entry.id)
    except Exception as exc:
        log.warning("outbox relay interrupted; retrying next round", error=_safe_error(exc))
    finally:
        if published:
            await repo.outbox_done(published)
            OUTBOX_RELAYED.inc(len(published))
            log.info("outbox entries relayed", count=len(published))
    return len(published)


async def relay_loop(
    repo: Repository,
    bus: Bus,
    owned_shards: Callable[[], list[int]],
    *,
    interval_s: float,
    grace_s: float,
    clock: Clock = utcnow,
) -> None:
    """Run :func:`relay_once` for the shards this worker owns every ``interval_s`` seconds."""
    while True:
        try:
            shards = owned_shards()
            if shards:
                await relay_once(repo, bus, shards, grace_s, clock=clock)
        except Exception as exc:
            log.warning("outbox relay round failed", error=_safe_error(exc))
        await asyncio.sleep(interval_s)
