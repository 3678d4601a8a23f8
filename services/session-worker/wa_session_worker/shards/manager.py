"""The shard manager: holds this worker's leases, renews them, rebalances to a fair share.

Two loops run while the worker is up (DESIGN.md, "Shards and ownership"):

- *renewal*, every ``lease_renew_s``: refresh the membership heartbeat and extend every held
  lease. A lease that is no longer ours (taken over, or expired) is dropped at once; when the
  store cannot be reached, each shard is dropped as soon as its local deadline passes
  (``renewal start + lease_ttl_s - lease_safety_s``, measured on the monotonic clock), which is
  before any other worker may take it.
- *rebalance*, every ``lease_renew_s``: with ``n`` live workers (heartbeat newer than
  ``lease_ttl_s``) the fair share is ``ceil(S / n)``; a worker above it gives shards up (sessions
  stopped first, then the lease released), a worker below it takes free or expired shards.

"Dropping" or "giving up" a shard calls :meth:`ShardOwner.shard_releasing` (stop consuming its
queue, stop its sessions) *before* the lease is released; taking one calls
:meth:`ShardOwner.shard_acquired` (start its sessions, consume its queue).

Logs: one INFO line per rebalance round that moved shards (``shards rebalanced`` with the lists
``acquired`` and ``released`` and the counts), one per graceful stop (``shards released``) and
one WARNING per drop; the per-shard steps are DEBUG (a first start takes every shard at once).
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from dataclasses import dataclass
from typing import Protocol

from wa_common.logs import get_logger
from wa_session_worker.metrics import LEASE_CHANGES, SHARDS_OWNED
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore, Member, wall_clock

log = get_logger(__name__)

# A worker whose heartbeat stopped this long ago (seconds) leaves the membership table (it used to
# stay listed forever); checked at most once per DEAD_MEMBER_PRUNE_EVERY_S.
DEAD_MEMBER_RETENTION_S = 600.0
DEAD_MEMBER_PRUNE_EVERY_S = 60.0


class ShardOwner(Protocol):
    async def shard_acquired(self, shard: int) -> None: ...

    async def shard_releasing(self, shard: int, *, urgent: bool) -> None: ...

    def session_count(self) -> int: ...


@dataclass
class HeldShard:
    epoch: int
    valid_until: float  # time.monotonic() deadline to stop its sessions without a renewal
    ready: bool = False  # shard_acquired finished
    leaving: bool = False  # being given up or dropped


class ShardManager:
    def __init__(self, store: LeaseStore, settings: WorkerSettings, owner: ShardOwner) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.worker_id = settings.id
        self.held: dict[int, HeldShard] = {}
        self.started_at = wall_clock()
        self._stopping = False  # no more acquisitions
        self._pruned_at = float("-inf")  # wall clock of the last dead-member prune
        self._closed = False  # no more renewals
        self._lock = asyncio.Lock()  # serialises acquire/give-up steps (not renewals)

    @property
    def shard_count(self) -> int:
        return self.store.shard_count

    def owned(self) -> list[int]:
        """Shards whose sessions run here (lease held and started)."""
        return sorted(k for k, h in self.held.items() if h.ready and not h.leaving)

    def _member(self) -> Member:
        return Member(
            id=self.worker_id,
            host=socket.gethostname(),
            port=self.settings.port,
            started_at=self.started_at,
            heartbeat_at=wall_clock(),
            sessions=self.owner.session_count(),
        )

    async def start(self) -> None:
        await self.store.ensure_rows()
        await self.store.heartbeat(self._member())

    # --- renewal ------------------------------------------------------------------------------

    async def renew_once(self) -> None:
        started = time.monotonic()
        snapshot = {k: h.epoch for k, h in self.held.items()}
        # A slow store is waited for until the first local deadline (then those shards are
        # dropped anyway), never less than half a second.
        deadlines = [h.valid_until for h in self.held.values() if not h.leaving]
        timeout = max(min(deadlines) - started, 0.5) if deadlines else self.settings.lease_ttl_s / 2

        async def heartbeat_and_renew() -> set[int]:
            if not self._stopping:  # a stopping worker has left the membership already
                await self.store.heartbeat(self._member())
            return await self.store.renew(snapshot, self.worker_id, self.settings.lease_ttl_s)

        try:
            renewed = await asyncio.wait_for(heartbeat_and_renew(), timeout)
        except Exception as exc:
            log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
            now = time.monotonic()
            expired = [k for k, h in self.held.items() if now >= h.valid_until]
            await self._drop(expired, reason="not renewed in time")
            return
        deadline = started + self.settings.lease_ttl_s - self.settings.lease_safety_s
        lost = []
        for shard, epoch in snapshot.items():
            held = self.held.get(shard)
            if held is None or held.epoch != epoch:
                continue
            if shard in renewed:
                held.valid_until = deadline
            elif not held.leaving:
                lost.append(shard)
        await self._drop(lost, reason="lease lost")

    async def _drop(self, shards: list[int], *, reason: str) -> None:
        """Stop the sessions of shards we may no longer own (no release: it is not ours)."""
        shards = [k for k in shards if k in self.held and not self.held[k].leaving]
        if not shards:
            return
        log.warning("dropping shards", shards=shards, reason=reason)
        for k in shards:
            self.held[k].leaving = True
        await asyncio.gather(*(self._stop_shard(k, urgent=True) for k in shards))
        for k in shards:
            self.held.pop(k, None)
            LEASE_CHANGES.labels("lost").inc()
        SHARDS_OWNED.set(len(self.held))

    async def _stop_shard(self, shard: int, *, urgent: bool = False) -> None:
        try:
            await self.owner.shard_releasing(shard, urgent=urgent)
        except Exception:
            log.exception("stopping a shard failed", shard=shard)

    # --- rebalance ----------------------------------------------------------------------------

    async def live_members(self) -> list[Member]:
        """Members whose heartbeat is within a lease TTL (this worker always). A member silent
        for :data:`DEAD_MEMBER_RETENTION_S` is deleted (at most once per
        :data:`DEAD_MEMBER_PRUNE_EVERY_S`): ``GET /api/admin/workers`` shows a dead worker for
        that long, then forgets it."""
        now = wall_clock()
        if now - self._pruned_at >= DEAD_MEMBER_PRUNE_EVERY_S:
            self._pruned_at = now
            await self.store.forget_dead(now - DEAD_MEMBER_RETENTION_S)
        horizon = now - self.settings.lease_ttl_s
        return [m for m in await self.store.members() if m.heartbeat_at >= horizon or m.id == self.worker_id]

    async def rebalance_once(self) -> None:
        if self._stopping:
            return
        async with self._lock:
            members = await self.live_members()
            fair = math.ceil(self.shard_count / max(1, len(members)))
            mine = sorted(k for k, h in self.held.items() if not h.leaving)
            acquired: list[int] = []
            released: list[int] = []
            try:
                if len(mine) > fair:
                    for shard in mine[fair:][::-1]:
                        if await self._give_up(shard):
                            released.append(shard)
                    return
                want = fair - len(mine)
                if want <= 0:
                    return
                now = wall_clock()
                free = [
                    lease.shard
                    for lease in await self.store.leases()
                    if lease.shard not in self.held and (lease.owner is None or lease.expires_at < now)
                ]
                for shard in sorted(free)[:want]:
                    if self._stopping:
                        return
                    if await self._take(shard):
                        acquired.append(shard)
            finally:
                if acquired or released:
                    log.info(
                        "shards rebalanced",
                        acquired=sorted(acquired),
                        released=sorted(released),
                        owned=len(self.owned()),
                        fair_share=fair,
                        workers=len(members),
                        sessions=self.owner.session_count(),
                    )

    async def _take(self, shard: int) -> bool:
        """Acquire and start ``shard``; whether it now runs here."""
        started = time.monotonic()
        epoch = await self.store.acquire(shard, self.worker_id, self.settings.lease_ttl_s)
        if epoch is None:
            return False
        held = HeldShard(epoch, started + self.settings.lease_ttl_s - self.settings.lease_safety_s)
        self.held[shard] = held
        LEASE_CHANGES.labels("acquired").inc()
        SHARDS_OWNED.set(len(self.held))
        log.debug("shard acquired", shard=shard, epoch=epoch)
        try:
            await self.owner.shard_acquired(shard)
        except Exception:
            log.exception("starting a shard failed; giving it up", shard=shard)
            await self._give_up(shard)
            return False
        if self.held.get(shard) is not held or held.leaving:
            # The lease was lost while the shard was starting: whatever started must stop again.
            log.warning("shard lost while starting; stopping it", shard=shard)
            await self._stop_shard(shard, urgent=True)
            return False
        held.ready = True
        return True

    async def _give_up(self, shard: int) -> bool:
        """Stop ``shard``'s sessions, then release its lease; whether this call gave it up."""
        held = self.held.get(shard)
        if held is None or held.leaving:
            return False
        held.leaving = True
        await self._stop_shard(shard)  # sessions stopped BEFORE the lease is released
        try:
            await self.store.release(shard, self.worker_id, held.epoch)
        except Exception as exc:
            log.warning("lease release failed; it will expire", shard=shard, error=str(exc))
        self.held.pop(shard, None)
        LEASE_CHANGES.labels("released").inc()
        SHARDS_OWNED.set(len(self.held))
        log.debug("shard released", shard=shard)
        return True

    # --- loops and shutdown -------------------------------------------------------------------

    async def renewal_loop(self) -> None:
        while not self._closed:
            await self.renew_once()
            await asyncio.sleep(self.settings.lease_renew_s)

    async def rebalance_loop(self) -> None:
        while not self._stopping:
            try:
                await self.rebalance_once()
            except Exception as exc:
                log.warning("rebalance failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.settings.lease_renew_s)

    async def stop(self) -> None:
        """Graceful stop: leave the membership, give every shard up (sessions stopped first)."""
        self._stopping = True
        # Leave first, so the others' fair share already excludes this worker when its shards
        # become free (they take them in their next rebalance round).
        await self._leave()
        async with self._lock:
            shards = sorted(self.held)
            done = await asyncio.gather(*(self._give_up(k) for k in shards))
        released = [k for k, ok in zip(shards, done, strict=True) if ok]
        if released:
            log.info("shards released", released=released, owned=len(self.owned()))
        self._closed = True
        await self._leave()

    async def _leave(self) -> None:
        try:
            await self.store.leave(self.worker_id)
        except Exception as exc:
            log.warning("could not leave the membership table", error=str(exc))
