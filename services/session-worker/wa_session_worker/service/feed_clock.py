"""The events feed's clock: an instance's kept events get strictly increasing millisecond times,
in the order they are committed.

The feed shows times in milliseconds and ``since`` means "after that millisecond"
(:meth:`~wa_session_worker.service.queries.Queries.events`): so an instance's feed times follow
the order its events were committed and no two are equal, and a client passing back
``latestTimestamp`` never sees an event twice nor misses one that was committed after its poll
(with stamps taken before a write, a late commit could fall behind the client's ``since``; two
events in one millisecond could be split by a poll).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from wa_common.bus import shard_for
from wa_common.clock import Clock
from wa_session_worker.repository.base import Repository

T = TypeVar("T")


def _whole_ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


class FeedClock:
    """Per instance, the time of its newest kept event (read from the store the first time, after
    a restart or a shard move) and the lock that orders its kept events' writes."""

    def __init__(self, repo: Repository, clock: Clock, shard_count: int) -> None:
        self.repo = repo
        self.clock = clock
        self.shard_count = shard_count
        self._stamps: dict[str, datetime] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def forget(self, instance_id: str) -> None:
        """Drop the instance's newest time (a deleted instance)."""
        self._stamps.pop(instance_id, None)

    def forget_shard(self, shard: int) -> None:
        """Drop the shard's newest times (another worker may write its events next)."""
        for iid in [i for i in self._stamps if shard_for(i, self.shard_count) == shard]:
            self._stamps.pop(iid, None)

    async def stamped(self, instance_id: str, write: Callable[[datetime], Awaitable[T]]) -> T:
        """Run ``write(at)``, the store write of an event kept for the events feed, with ``at``
        its time: a whole millisecond later than every earlier kept event of the instance, and
        written before the next one of the instance is stamped (module docstring), or, on a
        store that commits writes in submission order (``Repository.commits_in_order``),
        submitted before it."""
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        async with lock:
            last = self._stamps.get(instance_id)
            if last is None:
                newest, _ = await self.repo.recent_events(instance_id, since=None, types=None, limit=1)
                last = newest[0].occurred_at if newest else None
            at = _whole_ms(self.clock())
            if last is not None and at <= last:
                at = _whole_ms(last) + timedelta(milliseconds=1)
            self._stamps[instance_id] = at
            if not self.repo.commits_in_order:
                return await write(at)
            # The store commits its writes in the order they are submitted (the SQL store's group
            # commit): the write is started here, so it is queued before the next stamp's, and
            # the lock is not held while it waits for its window's commit.
            writing = asyncio.ensure_future(write(at))
        return await writing
