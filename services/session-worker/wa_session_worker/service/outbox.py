"""Transactional outbox of the session worker: no stored change loses the event that reports it.

Every event the worker publishes is first written to the ``outbox`` table together with what it
reports (a message's row, a recent-event row: ``Repository.record_message``/``stage_event``),
then published with a broker confirm and forgotten (``outbox_done``). If the worker dies, or the
broker refuses or times out, between the commit and the confirm, the entry stays, and
:func:`relay_loop` of the worker that owns the instance's shard publishes it later: every
``WORKER_OUTBOX_RELAY_INTERVAL_S`` it takes entries older than ``WORKER_OUTBOX_GRACE_S`` (the
normal path forgets them within milliseconds) and publishes them in order of creation.

Delivery is therefore at least once: an event confirmed just before a crash, whose entry was not
yet deleted, is published again with the same event id, and consumers deduplicate on it (the
dispatcher's outbox and the stats service both key on ``Event.id``).

With MongoDB (no multi-document transactions on a standalone server) the entry is written
before the change it reports, so a crash in between publishes the event without the change
rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from wa_common.bus import Bus, shard_for
from wa_common.logs import get_logger
from wa_common.schemas import Event, utcnow
from wa_session_worker.metrics import OUTBOX_PENDING, OUTBOX_RELAYED
from wa_session_worker.repository.base import OutboxRec, Repository

log = get_logger(__name__)

RELAY_BATCH = 200


def pending(event: Event, shard_count: int) -> OutboxRec:
    """The outbox entry of ``event`` (its instance's shard; events about no instance use shard 0)."""
    shard = shard_for(event.instance_id, shard_count) if event.instance_id else 0
    return OutboxRec(event.id, shard, event.to_bytes().decode(), utcnow())


async def deliver(repo: Repository, bus: Bus, event: Event) -> bool:
    """Publish a staged ``event`` and forget its entry; ``False`` when it stays for the relay.

    Never raises: the event is safe in the outbox whatever the broker does.
    """
    try:
        await bus.publish_event(event)
    except Exception as exc:
        log.warning(
            "event kept in the outbox for the relay", event_id=event.id, type=event.type, error=str(exc)
        )
        return False
    try:
        await repo.outbox_done([event.id])
    except Exception as exc:  # published: the relay may publish it again, consumers deduplicate
        log.warning("could not clear an outbox entry", event_id=event.id, error=str(exc))
    return True


async def relay_once(repo: Repository, bus: Bus, shards: list[int], grace_s: float) -> int:
    """Publish the due entries of ``shards`` (oldest first); returns how many were published.

    Stops at the first entry the broker does not confirm (order is kept for the next round).
    """
    due = await repo.outbox_due(sorted(shards), utcnow() - timedelta(seconds=grace_s), RELAY_BATCH)
    OUTBOX_PENDING.set(len(due))
    published: list[str] = []
    try:
        for entry in due:
            event = Event.from_bytes(entry.body)
            await bus.publish_event(event)
            published.append(entry.id)
    except Exception as exc:
        log.warning("outbox relay interrupted; retrying next round", error=str(exc))
    finally:
        if published:
            await repo.outbox_done(published)
            OUTBOX_RELAYED.inc(len(published))
            log.info("outbox entries relayed", count=len(published))
    return len(published)


async def relay_loop(
    repo: Repository, bus: Bus, owned_shards: Callable[[], list[int]], *, interval_s: float, grace_s: float
) -> None:
    """Run :func:`relay_once` for the shards this worker owns every ``interval_s`` seconds."""
    while True:
        try:
            shards = owned_shards()
            if shards:
                await relay_once(repo, bus, shards, grace_s)
        except Exception as exc:
            log.warning("outbox relay round failed", error=str(exc))
        await asyncio.sleep(interval_s)
