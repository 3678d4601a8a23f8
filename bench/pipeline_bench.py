"""Pipeline benchmark (``make bench`` = ``python -m bench``): what issue 15 ("Throughput") asks,
measured in one run on this machine, each figure beside a reference measured in the same run.

The system runs as processes (``tests/harness.py``: auth, stats, webhook dispatcher, ``--workers``
session workers on the simulator engine, the gateway; a fresh RabbitMQ vhost; fresh PostgreSQL
databases, or SQLite files with ``--stores sqlite``; ``WA_SHARDS=--shards``, 64 by default),
driven through the public REST API by the lean keep-alive client (``bench/lean_client.py``).
Sends are texts to the simulated external contact; ``message_sent`` webhooks go to a receiver on
loopback (``tests/support/webhooks.py``) that verifies every signature.

Measured (latencies in ms, rates per second, CPU in ms per send):

1. **References**: a bare FastAPI endpoint (uvicorn, one process) under the same lean client at
   the same concurrency (req/s, p50/p99, its CPU ms per request); a raw aio-pika confirmed
   publish → consume round trip (round trips/s, p50/p99).
2. **Saturation**: ``--sends`` sends from ``--clients`` closed-loop clients over ``--instances``
   instances: sends/s end to end (first send → last webhook), send API p50/p99, event → webhook
   p50/p99 (the event's timestamp to the webhook's arrival), and CPU ms per send per process and in
   total (services + RabbitMQ + PostgreSQL; the bench process beside it), idle background
   subtracted (``bench/cpu.py``).
3. **One instance alone**: ``--one-clients`` clients each send ``--one-sends`` numbered messages
   through one instance, each waiting for its previous 200: sends/s, and per client the order of
   its messages in the instance's chat history and in the webhooks (violations counted).
4. **Open loop**: ``--rate`` sends/s offered over the instances for ``--open-seconds``: send API
   p50/p99 (from the scheduled time) and event → webhook p50/p99.
5. **Kill** (``--kill-worker``): a saturation load during which one session worker is SIGKILLed:
   sends accepted vs messages stored (chat histories) vs ``message_sent`` webhooks (after up to
   120 s) — equal when nothing is lost.
6. **Failover** (``--failover``): ``--linked`` connected instances, then SIGKILL of the worker
   with the most sessions; seconds until every instance is connected again.

A section with the exact command is prepended to ``bench/RESULTS.md`` (newest first) unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.cpu import CpuMeter, per_operation_ms  # noqa: E402
from bench.load import (  # noqa: E402
    CONTACT,
    SECRET,
    Hooks,
    LoadResult,
    bare_reference,
    closed_loop,
    history,
    meter_for,
    open_loop,
    ordered_clients,
    parse_ts,
    pct,
)
from tests.harness import Cluster  # noqa: E402
from wa_common.ids import new_id  # noqa: E402

__all__ = ["AMQP_HOST", "CONTACT", "Bench", "main", "parse_ts", "pct", "rabbitmqctl"]

AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")


class Bench:
    """Instance set-up through the API (admin API key), and the failover measure."""

    def __init__(self, cluster: Cluster, api: httpx.AsyncClient, admin: dict[str, str], hooks: Hooks):
        self.cluster = cluster
        self.api = api
        self.admin = admin
        self.hooks = hooks

    async def create_and_link(self, count: int, *, webhook: bool, concurrency: int = 16) -> list[str]:
        """``count`` instances created and linked through the API (simulated phone scans); with
        ``webhook``, ``message_sent`` webhooks (only those) go to the loopback receiver."""
        ids: list[str] = []
        limit = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with limit:
                body: dict[str, Any] = {"name": f"bench-{n}"}
                if webhook:
                    body.update(
                        webhookUrl=self.hooks.url(),
                        webhookEnabled=True,
                        webhookSecret=SECRET,
                        notifySent=True,
                        notifyReceived=False,
                        notifyDelivery=False,
                        notifyRead=False,
                    )
                r = await self.api.post("/api/instances", headers=self.admin, json=body)
                r.raise_for_status()
                iid = r.json()["id"]
                await self._until(lambda: self._has_qr(iid), 120, f"QR of {iid}")
                phone = "1555" + f"{secrets.randbelow(10**7):07d}"
                for _ in range(5):  # a QR may rotate between the read and the scan
                    r = await self.api.post(
                        f"/api/admin/sim/instances/{iid}/scan", headers=self.admin, json={"phone": phone}
                    )
                    if r.status_code == 200:
                        break
                    await self._until(lambda: self._has_qr(iid), 60, f"QR of {iid}")
                r.raise_for_status()
                ids.append(iid)

        await asyncio.gather(*(one(n) for n in range(count)))
        await self.wait_connected(set(ids), timeout_s=300)
        return ids

    async def _has_qr(self, iid: str) -> bool:
        r = await self.api.get(f"/api/instances/{iid}/qr", headers=self.admin)
        return r.status_code == 200

    async def _until(self, check: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout_s}s")
            await asyncio.sleep(0.1)

    async def statuses(self) -> dict[str, str]:
        """Status of every instance (``GET /api/instances`` lists them all, unpaginated)."""
        r = await self.api.get("/api/instances", headers=self.admin)
        r.raise_for_status()
        return {i["id"]: i["status"] for i in r.json()["instances"]}

    async def wait_connected(self, ids: set[str], timeout_s: float) -> None:
        async def all_connected() -> bool:
            statuses = await self.statuses()
            return all(statuses.get(i) == "connected" for i in ids)

        await self._until(all_connected, timeout_s, f"{len(ids)} instances connected")

    async def workers(self) -> list[dict[str, Any]]:
        """``GET /api/admin/workers``: ``[{id, sessions, ...}]``."""
        r = await self.api.get("/api/admin/workers", headers=self.admin)
        r.raise_for_status()
        return list(r.json()["workers"])

    async def failover(self) -> tuple[str, int, float]:
        """SIGKILL the worker with the most sessions; seconds until all its instances are connected."""
        victim = max(await self.workers(), key=lambda w: w["sessions"])
        statuses = await self.statuses()
        started = time.monotonic()
        self.cluster.kill(victim["id"])

        async def taken_over() -> bool:
            # The survivors run every session (the store still says `connected` for the dead
            # worker's instances until then), and every instance is connected.
            alive = [w for w in await self.workers() if w["id"] != victim["id"]]
            if sum(w["sessions"] for w in alive) < len(statuses):
                return False
            current = await self.statuses()
            return all(current.get(i) == "connected" for i in statuses)

        await self._until(taken_over, 600, "failover")
        return victim["id"], int(victim["sessions"]), time.monotonic() - started


async def amqp_roundtrip(amqp_url: str, count: int, concurrency: int) -> dict[str, float]:
    """Raw aio-pika: publish (confirmed, persistent) to a queue and consume it; round trip per message."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=64)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        pending: dict[str, asyncio.Future[float]] = {}

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            future = pending.pop(message.message_id or "", None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

        await queue.consume(on_message)
        latencies: list[float] = []
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            loop = asyncio.get_running_loop()
            while remaining > 0:
                remaining -= 1
                message_id = new_id()
                future: asyncio.Future[float] = loop.create_future()
                pending[message_id] = future
                started = time.perf_counter()
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        b'{"phone":"79001234567","message":"bench"}',
                        message_id=message_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue.name,
                )
                latencies.append((await future - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return {"rate": count / elapsed, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}
    finally:
        await connection.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


async def saturation(
    args: argparse.Namespace, cluster: Cluster, key: str, hooks: Hooks, senders: list[str]
) -> LoadResult:
    """The closed-loop saturation load with CPU metering: idle background over 5 s first, then
    ``--sends`` sends; ``extra["cpu_ms"]``: CPU ms per accepted send per group (idle subtracted),
    ``extra["cpu_raw_ms"]``: the same without the subtraction, ``extra["idle"]``: idle CPU s per wall
    s per group."""
    meter: CpuMeter = meter_for(cluster, postgres=args.stores == "postgres")
    idle = await asyncio.to_thread(meter.idle_rate, 5.0)
    before = meter.snapshot()
    result = await closed_loop("sat", cluster.gateway_url, key, hooks, senders, args.sends, args.clients)
    after = meter.snapshot()
    used = CpuMeter.used(before, after)
    result.extra["cpu_ms"] = per_operation_ms(used, after.at - before.at, idle, len(result.accepted))
    result.extra["cpu_raw_ms"] = per_operation_ms(used, after.at - before.at, {}, len(result.accepted))
    result.extra["idle"] = idle
    return result


async def kill_run(
    args: argparse.Namespace, cluster: Cluster, bench: Bench, key: str, senders: list[str]
) -> LoadResult:
    """A saturation load of ``--sends`` sends during which the worker with the most sessions is
    SIGKILLed once a third of the sends have been answered. Afterwards (webhooks waited for up to
    120 s, every instance connected again) ``extra``: ``victim``, ``stored`` (the load's messages
    found in the chat histories among the accepted ones), ``webhooks`` (distinct ``message_sent``
    webhooks of accepted sends), ``stored_refused``/``webhooks_refused`` (the same for sends that
    were not answered 200: sent although the caller was told otherwise)."""
    victim = max(await bench.workers(), key=lambda w: w["sessions"])
    killed = False

    def progress(answered: int) -> None:
        nonlocal killed
        if not killed and answered >= args.sends // 3:
            killed = True
            cluster.kill(victim["id"])

    result = await closed_loop(
        "kill", cluster.gateway_url, key, bench.hooks, senders, args.sends, args.clients, on_progress=progress
    )
    await bench.wait_connected(set(senders), timeout_s=180)
    stored: set[str] = set()
    for iid in senders:
        stored.update(
            str(m.get("content") or "")
            for m in await history(cluster.gateway_url, key, iid)
            if str(m.get("content") or "").startswith("kill-")
        )
    accepted = set(result.accepted)
    hooked = {t for t in bench.hooks.arrivals if t.startswith("kill-")}
    result.extra.update(
        victim=victim["id"],
        victim_sessions=int(victim["sessions"]),
        stored=len(stored & accepted),
        webhooks=len(hooked & accepted),
        stored_refused=len(stored - accepted),
        webhooks_refused=len(hooked - accepted),
    )
    await cluster.restart(victim["id"], timeout_s=120)
    return result


@contextlib.asynccontextmanager
async def bench_cluster(
    prefix: str, *, workers: int, shards: int, stores: str
) -> AsyncIterator[tuple[Cluster, str, Path]]:
    """The whole system as processes on a fresh vhost (``tests/harness.py``), webhooks to
    loopback allowed and the rate limiter off; yields ``(cluster, amqp_url, work_dir)`` once it is
    started, and stops it and deletes the vhost on exit."""
    vhost = f"wa_bench_{new_id().lower()}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    work_dir = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        "LOG_LEVEL": "WARNING",
        "WA_SHARDS": str(shards),
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "GATEWAY_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
        "GATEWAY_RATE_LIMIT_PER_S": "0",
    }
    cluster = Cluster(amqp_url, work_dir=work_dir, workers=workers, stores=stores, env=env)
    try:
        await cluster.start(timeout_s=300)
        yield cluster, amqp_url, work_dir
    finally:
        await cluster.stop()
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=120, capture_output=True
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_cluster(
        "pipeline-bench-", workers=args.workers, shards=args.shards, stores=args.stores
    ) as (cluster, amqp_url, work_dir):
        return await _measure(args, cluster, amqp_url, work_dir)


async def _measure(
    args: argparse.Namespace, cluster: Cluster, amqp_url: str, work_dir: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"workDir": str(work_dir)}
    phase = time.monotonic()

    def mark(what: str) -> None:
        nonlocal phase
        now = time.monotonic()
        print(f"bench: {what} ({now - phase:.0f} s)", flush=True)
        phase = now

    mark("cluster started")
    # The references first, while the system idles.
    out["bare"] = await bare_reference(args.bare_requests, args.clients, work_dir)
    out["amqp"] = await asyncio.wait_for(amqp_roundtrip(amqp_url, args.bare_requests, args.clients), 180)
    mark("references measured")
    login = await cluster.login()
    key = login["user"]["apiKey"]
    hooks = Hooks()
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=60) as api:
        bench = Bench(cluster, api, {"x-api-key": key}, hooks)
        await hooks.receiver.start()
        try:
            senders = await bench.create_and_link(args.instances, webhook=True)
            mark(f"{len(senders)} sending instances linked")
            warm = min(args.sends, 2 * args.clients)
            await closed_loop("warm", cluster.gateway_url, key, hooks, senders, warm, args.clients)
            await hooks.settle()
            mark(f"warm-up ({warm} sends)")
            out["saturation"] = await saturation(args, cluster, key, hooks, senders)
            mark("saturation measured")
            out["one"] = await ordered_clients(
                cluster.gateway_url, key, hooks, senders[0], args.one_clients, args.one_sends
            )
            mark("one instance measured")
            out["open"] = await open_loop(
                cluster.gateway_url, key, hooks, senders, args.rate, args.open_seconds
            )
            await hooks.settle()
            mark("open loop measured (backlog drained)")
            if args.kill_worker:
                out["kill"] = await kill_run(args, cluster, bench, key, senders)
                mark("kill measured")
            if args.failover:
                more = max(0, args.linked - len(senders))
                started = time.monotonic()
                if more:
                    await bench.create_and_link(more, webhook=False)
                out["link_s"] = time.monotonic() - started
                out["linked"] = len(senders) + more
                mark(f"{more} more instances linked")
                out["failover"] = await bench.failover()
                mark("failover measured")
        finally:
            await hooks.receiver.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=100, help="sending instances (default 100)")
    add("--clients", type=int, default=100, help="closed-loop clients in the saturation load (default 100)")
    add("--sends", type=int, default=3000, help="sends in the saturation (and kill) load (default 3000)")
    add(
        "--bare-requests",
        type=int,
        default=3000,
        help="bare FastAPI requests (default 3000)",
    )
    add("--one-clients", type=int, default=20, help="clients of the one-instance measure (default 20)")
    add("--one-sends", type=int, default=25, help="messages per client through one instance (default 25)")
    add("--rate", type=float, default=300.0, help="open-loop offered load, sends/s (default 300)")
    add("--open-seconds", type=float, default=10.0, help="open-loop duration, s (default 10)")
    add(
        "--stores",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="stores (default postgres)",
    )
    add("--workers", type=int, default=2, help="session workers (default 2)")
    add("--shards", type=int, default=64, help="WA_SHARDS (default 64)")
    add("--kill-worker", action="store_true", help="also: SIGKILL a worker during a saturation load")
    add("--failover", action="store_true", help="also: link --linked instances and measure failover")
    add("--linked", type=int, default=500, help="connected instances for --failover (default 500)")
    add("--no-write", action="store_true", help="print the section, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[1]
    out = asyncio.run(run(args))
    load_after = os.getloadavg()[1]
    argv_used = sys.argv[1:] if argv is None else argv
    command = "python -m bench" + (" " + shlex.join(argv_used) if argv_used else "")
    text = report.section(args, out, command, (load_before, load_after))
    print(text)
    if not args.no_write:
        report.prepend(text)
