"""Cost of a send (issue 15): CPU ms per send per process, summed over the whole system
(services, RabbitMQ, PostgreSQL), with sends/s and latencies, driven by the lean client.

    .venv/bin/python -m bench.send_cost --instances 20 --clients 50 --sends 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.cpu import CpuMeter, per_operation_ms
from bench.lean_client import LeanConnection
from bench.pipeline_bench import AMQP_HOST, CONTACT, Bench, parse_ts, pct, rabbitmqctl
from tests.harness import Cluster
from wa_common.ids import new_id


async def closed_loop(
    bench: Bench, senders: list[str], sends: int, clients: int, api_key: str
) -> dict[str, Any]:
    """``sends`` sends from ``clients`` closed-loop clients (client ``c`` uses instance
    ``c % len(senders)``); waits for every ``message_sent`` webhook (120 s)."""
    remaining = sends
    api_ms: list[float] = []
    accepted: list[str] = []
    failed = 0

    async def client(c: int) -> None:
        nonlocal remaining, failed
        iid = senders[c % len(senders)]
        conn = LeanConnection(bench.cluster.gateway_url, {"x-api-key": api_key})
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                status, body = await conn.request(
                    "POST", f"/api/whatsapp/{iid}/send", {"phone": CONTACT, "message": f"bench {c}"}
                )
                if status == 200:
                    api_ms.append((time.perf_counter() - started) * 1000)
                    accepted.append(httpx.Response(200, content=body).json()["id"])
                else:
                    failed += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    api_done = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(m not in bench.arrivals for m in accepted):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    hook_ms = [
        max(0.0, (bench.arrivals[m][0] - parse_ts(bench.arrivals[m][1].body["timestamp"])) * 1000)
        for m in accepted
        if m in bench.arrivals
    ]
    return {
        "accepted": len(accepted),
        "failed": failed,
        "lost": sum(1 for m in accepted if m not in bench.arrivals),
        "api_s": api_done,
        "elapsed_s": elapsed,
        "rate": len(accepted) / elapsed if elapsed else 0.0,
        "api_ms": api_ms,
        "hook_ms": hook_ms,
    }


def meter_for(cluster: Cluster) -> CpuMeter:
    groups: dict[str, Any] = {}
    for name, proc in cluster.processes.items():
        groups[name] = lambda proc=proc: [proc.proc.pid] if proc.running and proc.proc else []
    groups["bench (client + webhook receiver)"] = lambda: [os.getpid()]
    return CpuMeter(groups)


async def run(args: argparse.Namespace) -> None:
    vhost = f"wa_bench_{new_id().lower()}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    work_dir = Path(tempfile.mkdtemp(prefix="send-cost-"))
    env = {
        "LOG_LEVEL": "WARNING",
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "GATEWAY_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
        "GATEWAY_RATE_LIMIT_PER_S": "0",
        "WA_SHARDS": str(args.shards),
    }
    cluster = Cluster(amqp_url, work_dir=work_dir, workers=args.workers, env=env)
    try:
        await cluster.start(timeout_s=300)
        login = await cluster.login()
        key = login["user"]["apiKey"]
        async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=60) as api:
            bench = Bench(args, cluster, api, {"x-api-key": key})
            await bench.receiver.start()
            try:
                senders = await bench.create_and_link(args.instances, webhook=True)
                # warm-up
                await closed_loop(bench, senders, min(200, args.sends), args.clients, key)
                meter = meter_for(cluster)
                idle = await asyncio.to_thread(meter.idle_rate, 5.0)
                before = meter.snapshot()
                print(
                    "load: start", {n: p.proc.pid for n, p in cluster.processes.items() if p.proc}, flush=True
                )
                result = await closed_loop(bench, senders, args.sends, args.clients, key)
                after = meter.snapshot()
            finally:
                await bench.receiver.stop()
        wall = after.at - before.at
        per = per_operation_ms(CpuMeter.used(before, after), wall, idle, result["accepted"])
        system = {k: v for k, v in per.items() if not k.startswith("bench")}
        print(
            f"sends {result['accepted']} ok {result['failed']} failed {result['lost']} lost; "
            f"{result['rate']:.1f} sends/s e2e; api p50/p99 {pct(result['api_ms'], 0.5):.0f}/"
            f"{pct(result['api_ms'], 0.99):.0f} ms; hook p50/p99 {pct(result['hook_ms'], 0.5):.0f}/"
            f"{pct(result['hook_ms'], 0.99):.0f} ms"
        )
        for name, ms in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {name:40s} {ms:7.2f} ms/send")
        print(f"  {'TOTAL (system)':40s} {sum(system.values()):7.2f} ms/send")
        if args.keep:
            print("work dir", work_dir)
    finally:
        await cluster.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--senders", type=int, default=0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
