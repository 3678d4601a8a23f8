"""Pipeline benchmark (``make bench`` = ``python -m bench``): the whole system, end to end, in one
run on this machine, each figure next to a reference measured in the same run.

The system runs as processes (``tests/harness.py``: auth, stats, webhook dispatcher, two session
workers on the simulator engine, the gateway; a fresh RabbitMQ vhost and fresh PostgreSQL
databases), driven through the public REST API with httpx; webhooks go to a receiver on loopback
(``tests/support/webhooks.py``) that verifies every signature.

Measured:

1. **Pipeline** — ``--sends`` text sends from ``--concurrency`` clients spread over a few linked
   instances: sustained sends/s end to end (first request → last ``message_sent`` webhook
   received: API accepted → stored → event → webhook), p50/p99 of the send API, p50/p99 of
   event → webhook (the event's timestamp to the webhook's arrival).
2. **The same load with ``--instances`` connected instances** across the two workers.
3. **Failover** — SIGKILL of the worker holding the most sessions; time until every one of its
   instances is ``connected`` again on the survivor (default lease timings).

References, same run, same machine: a bare FastAPI endpoint (uvicorn, one process) under the
same request load, and a raw aio-pika publish → consume round trip (publisher confirms, one
classic queue) at the same concurrency. Ratios to them stay comparable across machines and load.

A section with the exact command is prepended to ``bench/RESULTS.md`` (newest first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gateway_bench import bare_baseline  # noqa: E402
from tests.harness import Cluster  # noqa: E402
from tests.support.webhooks import Hook, WebhookReceiver  # noqa: E402
from wa_common.ids import new_id  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")
CONTACT = "79001234567"
SECRET = "bench-secret"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class PipelineResult:
    sends: int
    accepted: int
    elapsed_s: float
    api_ms: list[float] = field(default_factory=list)
    hook_ms: list[float] = field(default_factory=list)
    lost: int = 0
    bad_signatures: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s else 0.0


class Bench:
    def __init__(
        self, args: argparse.Namespace, cluster: Cluster, api: httpx.AsyncClient, admin: dict[str, str]
    ):
        self.args = args
        self.cluster = cluster
        self.api = api
        self.admin = admin
        self.receiver = WebhookReceiver(on_hook=self._on_hook)
        self.arrivals: dict[str, tuple[float, Hook]] = {}  # messageId -> (wall time, hook)
        self.waiters: dict[str, asyncio.Event] = {}

    def _on_hook(self, hook: Hook) -> None:
        if hook.event != "message_sent":
            return
        message_id = str(hook.data.get("messageId"))
        if message_id not in self.arrivals:
            self.arrivals[message_id] = (time.time(), hook)
            waiter = self.waiters.get(message_id)
            if waiter is not None:
                waiter.set()

    async def create_and_link(self, count: int, *, webhook: bool, concurrency: int = 16) -> list[str]:
        """``count`` instances created and linked through the API (simulated phone scans)."""
        ids: list[str] = []
        limit = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with limit:
                body: dict[str, Any] = {"name": f"bench-{n}"}
                if webhook:
                    body.update(
                        webhookUrl=self.receiver.url("bench", SECRET),
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

    async def pipeline(self, senders: list[str]) -> PipelineResult:
        """``--sends`` sends at ``--concurrency`` over ``senders``; waits for every webhook."""
        sends, concurrency = self.args.sends, self.args.concurrency
        result = PipelineResult(sends=sends, accepted=0, elapsed_s=0.0)
        remaining = sends
        accepted: list[str] = []
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.cluster.gateway_url, timeout=60, limits=limits) as client:

            async def worker(w: int) -> None:
                nonlocal remaining
                iid = senders[w % len(senders)]
                while remaining > 0:
                    remaining -= 1
                    started = time.perf_counter()
                    r = await client.post(
                        f"/api/whatsapp/{iid}/send",
                        headers=self.admin,
                        json={"phone": CONTACT, "message": f"bench {new_id()}"},
                    )
                    if r.status_code == 200:
                        result.api_ms.append((time.perf_counter() - started) * 1000)
                        message_id = r.json()["id"]
                        accepted.append(message_id)
                        if message_id not in self.arrivals:
                            self.waiters[message_id] = asyncio.Event()

            started = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            deadline = time.monotonic() + 120
            for message_id in accepted:
                waiter = self.waiters.get(message_id)
                if waiter is not None and not waiter.is_set():
                    try:
                        await asyncio.wait_for(waiter.wait(), max(0.01, deadline - time.monotonic()))
                    except TimeoutError:
                        result.lost += 1
            result.elapsed_s = time.perf_counter() - started
        result.accepted = len(accepted)
        for message_id in accepted:
            arrival = self.arrivals.get(message_id)
            if arrival is None:
                continue
            at, hook = arrival
            result.hook_ms.append(max(0.0, (at - parse_ts(hook.body["timestamp"])) * 1000))
            if hook.verified is not True:
                result.bad_signatures += 1
        return result

    async def failover(self) -> tuple[str, int, float]:
        """SIGKILL the worker with the most sessions; seconds until all its instances are connected."""
        workers = (await self.api.get("/api/admin/workers", headers=self.admin)).json()
        victim = max(workers["workers"], key=lambda w: w["sessions"])
        statuses = await self.statuses()
        started = time.monotonic()
        self.cluster.kill(victim["id"])

        async def taken_over() -> bool:
            # The survivor runs every session (the store still says `connected` for the dead
            # worker's instances until then), and every instance is connected.
            now = (await self.api.get("/api/admin/workers", headers=self.admin)).json()
            alive = [w for w in now["workers"] if w["id"] != victim["id"]]
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    vhost = f"wa_bench_{new_id().lower()}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    work_dir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    cluster = Cluster(
        amqp_url,
        work_dir=work_dir,
        workers=2,
        env={
            "LOG_LEVEL": "WARNING",
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
            "GATEWAY_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
            "GATEWAY_RATE_LIMIT_PER_S": "0",
        },
    )
    out: dict[str, Any] = {"workDir": str(work_dir)}
    phase = time.monotonic()

    def mark(what: str) -> None:
        nonlocal phase
        now = time.monotonic()
        print(f"bench: {what} ({now - phase:.0f} s)", flush=True)
        phase = now

    try:
        await cluster.start(timeout_s=180)
        mark("cluster started")
        # The references first, while the broker is fresh (the system idles meanwhile).
        out["bare"] = await bare_baseline(args.sends, args.concurrency, work_dir)
        out["amqp"] = await asyncio.wait_for(amqp_roundtrip(amqp_url, args.sends, args.concurrency), 180)
        mark("references measured")
        login = await cluster.login()
        admin = {"x-api-key": login["user"]["apiKey"]}
        async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=60) as api:
            bench = Bench(args, cluster, api, admin)
            await bench.receiver.start()
            try:
                senders = await bench.create_and_link(args.senders, webhook=True)
                mark(f"{len(senders)} sending instances linked")
                out["pipeline"] = await bench.pipeline(senders)
                mark("pipeline measured")
                idle = max(0, args.instances - len(senders))
                started = time.monotonic()
                if idle:
                    await bench.create_and_link(idle, webhook=False)
                out["link_s"] = time.monotonic() - started
                out["instances"] = len(senders) + idle
                mark(f"{idle} more instances linked")
                out["loaded"] = await bench.pipeline(senders)
                mark("pipeline with all instances measured")
                out["failover"] = await bench.failover()
                mark("failover measured")
            finally:
                await bench.receiver.stop()
        return out
    finally:
        await cluster.stop()
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=120, capture_output=True
        )


def section(args: argparse.Namespace, out: dict[str, Any], command: str, loads: tuple[float, float]) -> str:
    p: PipelineResult = out["pipeline"]
    q: PipelineResult = out["loaded"]
    bare, amqp = out["bare"], out["amqp"]
    victim, sessions, failover_s = out["failover"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def row(name: str, r: PipelineResult) -> list[str]:
        return [
            f"| {name}: sends/s end to end (API → stored → event → webhook) | {r.rate:.1f} | "
            f"bare FastAPI {bare['rps']:.0f} req/s | {r.rate / bare['rps']:.3f} |",
            f"| {name}: send API p50 / p99 ms | {pct(r.api_ms, 0.5):.0f} / {pct(r.api_ms, 0.99):.0f} | "
            f"bare FastAPI {bare['p50_ms']:.1f} / {bare['p99_ms']:.1f} | "
            f"{pct(r.api_ms, 0.5) / bare['p50_ms']:.1f}x / {pct(r.api_ms, 0.99) / bare['p99_ms']:.1f}x |",
            f"| {name}: event → webhook p50 / p99 ms | "
            f"{pct(r.hook_ms, 0.5):.0f} / {pct(r.hook_ms, 0.99):.0f} | "
            f"aio-pika round trip {amqp['p50_ms']:.1f} / {amqp['p99_ms']:.1f} | "
            f"{pct(r.hook_ms, 0.5) / amqp['p50_ms']:.1f}x / {pct(r.hook_ms, 0.99) / amqp['p99_ms']:.1f}x |",
        ]

    lines = [
        f"## Pipeline, end to end — {stamp}",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPU cores; 5-min load average {loads[0]:.1f} before, "
        f"{loads[1]:.1f} after; whole system as processes: 2 session workers on the simulator engine, "
        f"PostgreSQL stores, {os.environ.get('HARNESS_SHARDS', '8')} shards; {args.sends} sends at "
        f"concurrency {args.concurrency} over {args.senders} instances, "
        "text to an external simulated contact)",
        "",
        "| measure | value | reference (same run) | ratio |",
        "|---|---|---|---|",
        *row(f"{args.senders} instances", p),
        *row(f"{out['instances']} connected instances", q),
        f"| failover: SIGKILL of {victim} ({sessions} sessions) until all instances connected again | "
        f"{failover_s:.1f} s | lease TTL 9 s + renew 2 s (defaults) | — |",
        f"| linking {out['instances'] - args.senders} more instances (create, QR, scan, connected) | "
        f"{out['link_s']:.1f} s | — | — |",
        "",
        f"Webhooks: {p.accepted + q.accepted} sends accepted, {p.lost + q.lost} `message_sent` webhooks "
        "missing "
        f"after 120 s, {p.bad_signatures + q.bad_signatures} bad signatures. aio-pika reference: "
        f"{amqp['rate']:.0f} confirmed publish→consume round trips/s. Ratios are the meaningful figures on a "
        "shared machine; absolute numbers move with the load average.",
        "",
        "",
    ]
    return "\n".join(lines)


def prepend(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    RESULTS.write_text(text + existing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=300, help="sends per pipeline measurement (default 300)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent API clients (default 16)")
    parser.add_argument("--senders", type=int, default=4, help="instances that send (default 4)")
    parser.add_argument(
        "--instances", type=int, default=500, help="connected instances in the loaded run (default 500)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[1]
    out = asyncio.run(run(args))
    load_after = os.getloadavg()[1]
    command = "python -m bench" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    text = section(args, out, command, (load_before, load_after))
    print(text)
    if not args.no_write:
        prepend(text)
