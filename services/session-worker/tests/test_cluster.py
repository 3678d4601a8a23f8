"""Acceptance of shard ownership with real worker processes (issue 4; DESIGN.md properties 1-4).

Real RabbitMQ and PostgreSQL, workers started as ``python -m wa_session_worker`` on the
simulator engine, commands sent the way the gateway sends them (RPC to the shard queue).

One scenario, in order: two workers share 8 shards; 40 instances are created and paired through
the simulator; instances on different workers exchange messages and receipts update statuses;
one worker is killed with SIGKILL while sends are in flight: its instances are connected again on
the survivor from stored device records (no QR scan) within 15 s, sends succeed or fail clearly
and none runs twice; a new worker joins and shards rebalance; a SIGTERM moves shards in seconds;
the simulator saw zero double connections throughout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import fresh_database, wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    QUERY_ROUTING_KEY,
    Bus,
    RequestTimeout,
    RpcClient,
    shard_for,
    shard_queue,
)
from wa_common.ids import new_id
from wa_common.schemas import Caller, Command, Query, Reply
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand, SessionQuery
from wa_common.sim_client import DoubleConnectionWatch, sim_roll_call, sim_scan, watch_double_connections

S = 8
N = 40
ADMIN = Caller(user_id="admin-1", role="admin")
USERS = [Caller(user_id="user-a"), Caller(user_id="user-b")]
pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
async def cluster_db() -> AsyncIterator[str]:
    """A database of its own for the cluster (the lease tests reset theirs)."""
    async with fresh_database("wa_test_cluster", migrate="wa_session_worker") as url:
        yield url


class Worker:
    def __init__(self, worker_id: str, env: dict[str, str], log_dir: Path) -> None:
        self.id = worker_id
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wa_session_worker"],
            env={**env, "WORKER_ID": worker_id},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def spawn(amqp_url: str, cluster_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log_dir = tmp_path_factory.mktemp("workers")
    env = {
        **os.environ,
        "WA_PROFILE": "embedded",
        "AMQP_URL": amqp_url,
        "WA_SHARDS": str(S),
        "WA_ENGINE": "simulator",
        "LOG_FORMAT": "console",
        "WORKER_PORT": "0",
        "WORKER_DATABASE_URL": cluster_db,
        "WORKER_LEASE_TTL_S": "5",
        "WORKER_LEASE_RENEW_S": "1",
        "WORKER_LEASE_SAFETY_S": "1.5",
        "WORKER_SIM_DELIVERED_MS": "50",
        "WORKER_SIM_READ_MS": "100",
    }
    workers: list[Worker] = []

    def start(worker_id: str) -> Worker:
        worker = Worker(worker_id, env, log_dir)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill(signal.SIGKILL)
        worker.wait(10)


@pytest.fixture(scope="module")
async def client(amqp_url: str) -> AsyncIterator[tuple[Bus, RpcClient]]:
    bus = Bus(amqp_url, service="cluster-test", shard_count=S, prefetch=64, delivery_limit=5)
    await bus.connect()
    rpc = RpcClient(bus)
    await rpc.start()
    yield bus, rpc
    await bus.close()


async def command(
    rpc: RpcClient,
    name: str,
    instance_id: str,
    caller: Caller,
    payload: dict[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
    key: str | None = None,
) -> Reply:
    cmd = Command(
        name=name,
        caller=caller,
        instance_id=instance_id,
        payload=payload or {},
        deadline=utcnow() + timedelta(seconds=timeout_s),
        idempotency_key=key,
    )
    return await rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(instance_id, S)), cmd)


async def query(
    rpc: RpcClient,
    name: str,
    caller: Caller,
    instance_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Reply:
    q = Query(name=name, caller=caller, instance_id=instance_id, payload=payload or {})
    return await rpc.call(EXCHANGE_COMMANDS, QUERY_ROUTING_KEY, q)


async def cluster(rpc: RpcClient) -> dict[str, list[int]]:
    reply = await query(rpc, SessionQuery.CLUSTER, ADMIN)
    assert reply.ok, reply
    return {w["id"]: w["shards"] for w in reply.data["workers"] if w["alive"]}


async def sessions_by_worker(bus: Bus) -> dict[str, dict[str, str]]:
    """worker -> {instance id: status} from the simulator's roll call."""
    answers = await sim_roll_call(bus, wait_s=0.7)
    return {a.worker: {s.instance_id: s.status for s in a.sessions} for a in answers}


def phone_of(index: int) -> str:
    return f"1555{index:07d}"


async def test_cluster_failover_and_rebalance(spawn: Any, client: tuple[Bus, RpcClient]) -> None:
    bus, rpc = client
    watch: DoubleConnectionWatch = await watch_double_connections(bus)
    a, b = spawn("worker-a"), spawn("worker-b")

    async def fair(expected: set[str]) -> bool:
        try:
            owners = await cluster(rpc)
        except RequestTimeout:
            return False
        live = {w for w in owners if w in expected}
        share = -(-S // len(expected))
        counts = [len(owners.get(w, [])) for w in expected]
        return live == expected and sum(counts) == S and all(c <= share for c in counts) and all(counts)

    await wait_for(lambda: fair({"worker-a", "worker-b"}), timeout_s=60, interval_s=0.5, message="4/4 shards")

    # --- 40 instances, paired through the simulator -------------------------------------------
    ids = [new_id() for _ in range(N)]
    owner_user = {iid: USERS[i % 2] for i, iid in enumerate(ids)}
    replies = await asyncio.gather(
        *(
            command(rpc, SessionCommand.CREATE_INSTANCE, iid, owner_user[iid], {"name": f"inst {i}"})
            for i, iid in enumerate(ids)
        )
    )
    assert all(r.status == 201 for r in replies), [r for r in replies if r.status != 201][:3]
    assert replies[0].data["id"] == ids[0] and replies[0].data["userId"] == "user-a"

    async def pair(i: int, iid: str) -> None:
        async def qr() -> str | None:
            reply = await query(rpc, SessionQuery.QR, owner_user[iid], iid)
            return reply.data["qrCode"] if reply.status == 200 else None

        code = await wait_for(qr, timeout_s=30, interval_s=0.2, message=f"QR of instance {i}")
        await sim_scan(bus, code, phone_of(i), push_name=f"Phone {i}")

    await asyncio.gather(*(pair(i, iid) for i, iid in enumerate(ids)))

    async def all_connected(subset: list[str]) -> bool:
        statuses = await asyncio.gather(*(query(rpc, SessionQuery.STATUS, owner_user[i], i) for i in subset))
        return all(s.data["status"] == "connected" for s in statuses)

    await wait_for(lambda: all_connected(ids), timeout_s=30, interval_s=0.3, message="40 connected")

    # A foreign caller sees nothing; admins see everything.
    foreign = await query(rpc, SessionQuery.STATUS, Caller(user_id="intruder"), ids[0])
    assert foreign.status == 404
    listed = await query(rpc, SessionQuery.LIST_INSTANCES, ADMIN, payload={"allUsers": True})
    assert {i["id"] for i in listed.data["instances"]} >= set(ids)

    # --- messages between instances on different workers --------------------------------------
    owners = await cluster(rpc)
    shard_owner = {k: w for w, shards in owners.items() for k in shards}
    worker_of = {iid: shard_owner[shard_for(iid, S)] for iid in ids}
    on_a = [i for i in ids if worker_of[i] == "worker-a"]
    on_b = [i for i in ids if worker_of[i] == "worker-b"]
    assert on_a and on_b
    index = {iid: n for n, iid in enumerate(ids)}
    pairs = list(zip(on_a[:5], on_b[:5], strict=False))
    sent: dict[str, str] = {}
    reply: Reply | None  # None: a send during the move that timed out (below)
    for x, y in pairs:
        for src, dst in ((x, y), (y, x)):
            body = f"hello {index[src]}->{index[dst]}"
            reply = await command(
                rpc,
                SessionCommand.SEND_TEXT,
                src,
                owner_user[src],
                {"phone": phone_of(index[dst]), "message": body},
            )
            assert reply.ok, reply
            sent[body] = reply.data["id"]

    async def history(iid: str, peer: str) -> list[dict[str, Any]]:
        reply = await query(
            rpc,
            SessionQuery.CHAT_MESSAGES,
            owner_user[iid],
            iid,
            {"chatId": phone_of(index[peer]), "limit": 100},
        )
        assert reply.ok, reply
        return list(reply.data["messages"])

    async def delivered_everywhere() -> bool:
        for x, y in pairs:
            for src, dst in ((x, y), (y, x)):
                mine = await history(src, dst)
                out = [m for m in mine if m["fromMe"]]
                inbound = [m for m in await history(dst, src) if not m["fromMe"]]
                if not out or out[0]["status"] not in ("delivered", "read") or not inbound:
                    return False
        return True

    await wait_for(
        delivered_everywhere, timeout_s=20, interval_s=0.3, message="messages received, receipts stored"
    )
    sample = next(m for m in await history(pairs[0][0], pairs[0][1]) if m["fromMe"])
    assert sample["statusUpdatedAt"] is not None and sample["messageType"] == "text"

    # --- kill -9 one worker while sends are in flight -----------------------------------------
    victim, survivor = (b, a)
    moved = on_b
    b.kill(signal.SIGKILL)
    killed_at = time.monotonic()

    async def send_during_move(n: int, iid: str) -> tuple[str, str, Reply | None]:
        body = f"during move {n}"
        try:
            reply = await command(
                rpc,
                SessionCommand.SEND_TEXT,
                iid,
                owner_user[iid],
                {"phone": phone_of(index[ids[0] if iid != ids[0] else ids[1]]), "message": body},
                timeout_s=20,
                key=f"move-{n}",
            )
        except RequestTimeout:
            reply = None
        return iid, body, reply

    in_flight = asyncio.gather(*(send_during_move(n, iid) for n, iid in enumerate(moved[:8])))

    async def moved_connected() -> bool:
        sessions = await sessions_by_worker(bus)
        mine = sessions.get(survivor.id, {})
        return all(mine.get(i) == "connected" for i in moved)

    await wait_for(
        moved_connected, timeout_s=20, interval_s=0.2, message="moved instances connected on survivor"
    )
    failover_s = time.monotonic() - killed_at
    print(
        f"\nfailover: {len(moved)} instances connected again on {survivor.id} "
        f"in {failover_s:.1f}s after SIGKILL"
    )
    assert failover_s < 15, f"failover took {failover_s:.1f}s"
    assert victim.proc.poll() is not None

    results = await in_flight
    for iid, body, reply in results:
        peer = ids[0] if iid != ids[0] else ids[1]
        copies = [m for m in await history(iid, peer) if m["content"] == body]
        assert len(copies) <= 1, f"{body!r} executed {len(copies)} times"
        if reply is not None and reply.ok:
            assert len(copies) == 1
        elif reply is not None:
            assert reply.error, "a failed send must say why"
    ok = sum(1 for _, _, r in results if r is not None and r.ok)
    errors = sorted(
        {f"{r.status} {r.error}" if r is not None else "timeout" for _, _, r in results if not (r and r.ok)}
    )
    print(f"sends during the move: {ok} ok, {len(results) - ok} failed clearly {errors}")
    # A retried send with the same idempotency key runs once.
    for n, (iid, body, reply) in enumerate(results):
        if reply is None or not reply.ok:
            continue
        peer = ids[0] if iid != ids[0] else ids[1]
        again = await command(
            rpc,
            SessionCommand.SEND_TEXT,
            iid,
            owner_user[iid],
            {"phone": phone_of(index[peer]), "message": body},
            key=f"move-{n}",
        )
        assert again.ok and again.data["id"] == reply.data["id"]
        assert len([m for m in await history(iid, peer) if m["content"] == body]) == 1
        break

    # No new QR scan was needed: the moved instances are connected without a qr_received since.
    # --- a third worker joins: rebalance to fair share ----------------------------------------
    c = spawn("worker-c")
    await wait_for(
        lambda: fair({"worker-a", "worker-c"}), timeout_s=60, interval_s=0.5, message="rebalance a/c"
    )

    async def each_once_on_owner() -> bool:
        owners = await cluster(rpc)
        shard_owner = {k: w for w, shards in owners.items() for k in shards}
        sessions = await sessions_by_worker(bus)
        for iid in ids:
            where = [w for w, s in sessions.items() if s.get(iid) == "connected"]
            if where != [shard_owner.get(shard_for(iid, S))]:
                return False
        return True

    await wait_for(
        each_once_on_owner, timeout_s=20, interval_s=0.3, message="each instance once, on its owner"
    )

    # --- SIGTERM (rolling restart): shards move in seconds --------------------------------------
    c.kill(signal.SIGTERM)
    stopped_at = time.monotonic()
    await wait_for(
        lambda: fair({"worker-a"}), timeout_s=15, interval_s=0.2, message="a owns all after SIGTERM"
    )
    await wait_for(
        lambda: all_connected(ids), timeout_s=15, interval_s=0.3, message="all connected after SIGTERM"
    )
    await wait_for(each_once_on_owner, timeout_s=15, interval_s=0.3, message="all sessions on a")
    moved_s = time.monotonic() - stopped_at
    print(f"graceful move of worker-c's shards: {moved_s:.1f}s")
    assert c.wait(20) in (0, -signal.SIGTERM), c.tail()  # uvicorn re-raises SIGTERM after a clean stop
    assert "service stopped" in c.tail(5), c.tail()

    await watch.stop()
    assert watch.count == 0, f"double connections: {watch.alerts}"
    assert survivor.proc.poll() is None, survivor.tail()
