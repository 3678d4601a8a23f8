"""Shard leases and the shard manager on the real PostgreSQL (DESIGN.md properties 1 and 3).

The managers run in this process with a recording :class:`ShardOwner` in place of sessions, so
the tests can check, at every step, that no shard runs on two owners at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from sqlalchemy import delete
from structlog.testing import capture_logs

from conftest import wait_for
from wa_common.db import create_engine
from wa_session_worker.models import shard_leases, workers
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore
from wa_session_worker.shards.manager import ShardManager

S = 8
ACTIVE: dict[int, str] = {}  # shard -> worker running it, shared by every RecordingOwner
VIOLATIONS: list[str] = []


class RecordingOwner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.running: set[int] = set()

    async def shard_acquired(self, shard: int) -> None:
        other = ACTIVE.get(shard)
        if other is not None and other != self.name:
            VIOLATIONS.append(f"shard {shard} started on {self.name} while running on {other}")
        ACTIVE[shard] = self.name
        self.running.add(shard)
        await asyncio.sleep(0.01)

    async def shard_releasing(self, shard: int, *, urgent: bool) -> None:
        await asyncio.sleep(0.01)
        self.running.discard(shard)
        if ACTIVE.get(shard) == self.name:
            del ACTIVE[shard]

    def session_count(self) -> int:
        return len(self.running)


@pytest.fixture
async def store(worker_pg_url: str) -> AsyncIterator[LeaseStore]:
    engine = create_engine(worker_pg_url)
    async with engine.begin() as conn:
        await conn.execute(delete(shard_leases))
        await conn.execute(delete(workers))
    ACTIVE.clear()
    VIOLATIONS.clear()
    leases = LeaseStore(engine, S)
    await leases.ensure_rows()
    yield leases
    await engine.dispose()


def settings(worker_id: str) -> WorkerSettings:
    return WorkerSettings(
        id=worker_id,
        profile="embedded",
        shard_count=S,
        lease_ttl_s=3,
        lease_renew_s=0.3,
        lease_safety_s=1,
    )


class Running:
    """A manager with its two loops, as the worker runs it."""

    def __init__(self, store: LeaseStore, worker_id: str) -> None:
        self.owner = RecordingOwner(worker_id)
        self.manager = ShardManager(store, settings(worker_id), self.owner)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Running:
        await self.manager.start()
        self.tasks = [
            asyncio.create_task(self.manager.renewal_loop()),
            asyncio.create_task(self.manager.rebalance_loop()),
        ]
        return self

    def kill(self) -> None:
        """Die without releasing anything (like kill -9): loops stop, state is abandoned."""
        for task in self.tasks:
            task.cancel()
        # the process is gone: its sessions are gone with it
        for shard in list(self.owner.running):
            if ACTIVE.get(shard) == self.owner.name:
                del ACTIVE[shard]
        self.owner.running.clear()

    async def stop(self) -> None:
        await self.manager.stop()
        for task in self.tasks:
            task.cancel()


async def test_acquisition_is_atomic(store: LeaseStore) -> None:
    results = await asyncio.gather(*(store.acquire(3, f"w{i}", 5.0) for i in range(10)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0] == 1
    leases = {lease.shard: lease for lease in await store.leases()}
    assert leases[3].epoch == 1 and leases[3].owner is not None
    owner = leases[3].owner
    assert await store.renew({3: 1}, owner, 5.0) == {3}
    assert await store.renew({3: 1}, "intruder", 5.0) == set()
    assert not await store.release(3, owner, epoch=99), "release needs the current epoch"
    assert await store.release(3, owner, epoch=1)
    assert await store.acquire(3, "w-next", 0.2) == 2, "every owner change increments the epoch"
    await wait_for(lambda: store.acquire(3, "w-late", 5.0), timeout_s=3, message="expired lease taken")


async def test_two_workers_fair_share_and_graceful_move(store: LeaseStore) -> None:
    a = await Running(store, "wa").start()
    await wait_for(lambda: len(a.manager.owned()) == S, timeout_s=5, message="first worker takes all")
    b = await Running(store, "wb").start()
    await wait_for(
        lambda: len(a.manager.owned()) == 4 and len(b.manager.owned()) == 4,
        timeout_s=8,
        message="fair share 4/4",
    )
    c = await Running(store, "wc").start()
    await wait_for(
        lambda: sorted(len(x.manager.owned()) for x in (a, b, c)) == [2, 3, 3],
        timeout_s=8,
        message="fair share 3/3/2",
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await c.stop()  # graceful: releases at once
    await wait_for(
        lambda: len(a.manager.owned()) + len(b.manager.owned()) == S, timeout_s=5, message="shards moved"
    )
    moved_s = loop.time() - started
    assert moved_s < 2.0, f"a graceful stop should move shards within a renewal round, took {moved_s:.1f}s"
    await a.stop()
    await b.stop()
    assert not VIOLATIONS, VIOLATIONS


async def test_dead_worker_shards_taken_after_expiry(store: LeaseStore) -> None:
    a = await Running(store, "wa").start()
    b = await Running(store, "wb").start()
    await wait_for(
        lambda: len(a.manager.owned()) == 4 and len(b.manager.owned()) == 4, timeout_s=8, message="4/4"
    )
    b_shards = set(b.manager.owned())
    b.kill()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: set(a.manager.owned()) >= b_shards, timeout_s=8, message="survivor owns all")
    assert loop.time() - started >= 1.5, "taken before the dead worker's lease could expire"
    await a.stop()
    assert not VIOLATIONS, VIOLATIONS


async def test_lost_lease_stops_sessions(store: LeaseStore) -> None:
    a = await Running(store, "wa").start()
    await wait_for(lambda: len(a.manager.owned()) == S, timeout_s=5, message="all owned")
    # Someone else takes shard 0 behind its back (e.g. after a long pause of this process).
    async with store.engine.begin() as conn:
        from sqlalchemy import update

        await conn.execute(
            update(shard_leases)
            .where(shard_leases.c.shard == 0)
            .values(owner="thief", epoch=shard_leases.c.epoch + 1)
        )
    await wait_for(lambda: 0 not in a.owner.running, timeout_s=3, message="sessions of a lost shard stopped")
    await a.stop()


async def test_shard_moves_are_logged_once_per_round(store: LeaseStore) -> None:
    """A starting worker takes every shard at once: one INFO line per rebalance round names them
    all (acquired, released, counts); the per-shard steps are DEBUG, so a 192-shard start does not
    bury the other start-up lines."""
    a = ShardManager(store, settings("wa"), RecordingOwner("wa"))
    b = ShardManager(store, settings("wb"), RecordingOwner("wb"))
    await a.start()

    def loud(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
        return [e for e in logs if e["log_level"] != "debug"]

    with capture_logs() as logs:
        await a.rebalance_once()
    assert a.owned() == list(range(S))
    [line] = loud(logs)
    assert line["log_level"] == "info" and line["event"] == "shards rebalanced", line
    assert line["acquired"] == list(range(S)) and line["released"] == []
    assert (line["owned"], line["fair_share"], line["workers"], line["sessions"]) == (S, S, 1, S)
    per_shard = [e for e in logs if e["event"] == "shard acquired"]
    assert sorted(e["shard"] for e in per_shard) == list(range(S))
    assert {e["log_level"] for e in per_shard} == {"debug"}

    with capture_logs() as logs:
        await a.rebalance_once()
    assert loud(logs) == [], "a round that moves nothing logs nothing"

    await b.start()
    with capture_logs() as logs:
        await a.rebalance_once()  # a second live worker: a gives half of its shards up
        await b.rebalance_once()
    gave, took = loud(logs)
    assert (gave["event"], gave["released"], gave["acquired"], gave["owned"]) == (
        "shards rebalanced",
        [4, 5, 6, 7],
        [],
        4,
    )
    assert (took["acquired"], took["released"], took["owned"], took["workers"]) == ([4, 5, 6, 7], [], 4, 2)
    assert all(e["log_level"] == "debug" for e in logs if e["event"] == "shard released")

    with capture_logs() as logs:
        await a.stop()
        await b.stop()
    assert [(e["event"], e["released"]) for e in loud(logs)] == [
        ("shards released", [0, 1, 2, 3]),
        ("shards released", [4, 5, 6, 7]),
    ]
    assert not VIOLATIONS, VIOLATIONS


async def test_long_dead_workers_leave_the_membership(store: LeaseStore) -> None:
    """LeaseStore.forget_dead existed but nothing called it: a dead worker stayed listed forever."""
    from wa_session_worker.shards.leases import Member, wall_clock
    from wa_session_worker.shards.manager import DEAD_MEMBER_RETENTION_S

    now = wall_clock()
    await store.heartbeat(Member("long-dead", "h", 1, now - 7200, now - DEAD_MEMBER_RETENTION_S - 5, 0))
    await store.heartbeat(Member("just-died", "h", 1, now - 7200, now - 30, 0))
    manager = ShardManager(store, settings("alive"), RecordingOwner("alive"))
    live = {m.id for m in await manager.live_members()}
    assert "long-dead" not in live and "just-died" not in live
    listed = {m.id for m in await store.members()}
    assert "long-dead" not in listed
    assert "just-died" in listed, "a recently dead worker stays visible to operators"
