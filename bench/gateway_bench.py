"""Gateway benchmark: sends per second and p50/p99 latency through the gateway at a fixed
concurrency, next to a bare FastAPI endpoint served by uvicorn on the same machine in the same run.

The whole system runs as processes (``tests/harness.py``: auth, stats, webhook dispatcher, one
session worker on the simulator engine, the gateway) on a fresh RabbitMQ vhost and fresh
PostgreSQL databases. An instance is linked through the simulator, then ``--requests`` text sends
(``POST /api/whatsapp/{id}/send``, API-key auth) are made by ``--concurrency`` concurrent clients
(httpx, keep-alive). The baseline is ``POST /send`` on a FastAPI app that returns ``{"id": ...}``
at once (uvicorn, one process, same JSON body): the difference is the gateway's cost (auth,
validation, phone normalisation, metering, the bus round trip to the shard worker, the worker's
idempotency record and store write, the simulated network). Results are appended to
``bench/RESULTS.md`` with the command line.

    .venv/bin/python bench/gateway_bench.py --requests 2000 --concurrency 32
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import Cluster, free_port  # noqa: E402
from wa_common.ids import new_id  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")

BARE_APP = """
import itertools
from fastapi import FastAPI
app = FastAPI()
counter = itertools.count()
@app.post("/send")
async def send(body: dict) -> dict:
    return {"id": f"3EB0{next(counter):018X}"}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    url: str, headers: dict[str, str], body: dict[str, Any], requests: int, concurrency: int
) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        # Warm-up: connections and caches.
        for _ in range(min(concurrency, 20)):
            await client.post(url, headers=headers, json=body)

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(url, headers=headers, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors[response.status_code] = errors.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors,
        "n": len(latencies),
    }


async def bare_baseline(requests: int, concurrency: int, work_dir: Path) -> dict:
    app_file = work_dir / "bare_app.py"
    app_file.write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=str(work_dir),
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    await client.post(f"http://127.0.0.1:{port}/send", json={})
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        return await load(
            f"http://127.0.0.1:{port}/send",
            {},
            {"phone": "79001234567", "message": "bench"},
            requests,
            concurrency,
        )
    finally:
        proc.terminate()
        proc.wait(10)


async def run(args: argparse.Namespace) -> tuple[dict, dict]:
    vhost = f"wa_bench_{new_id().lower()}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
    )
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    cluster = Cluster(
        f"amqp://guest:guest@{AMQP_HOST}/{vhost}",
        work_dir=work_dir,
        env={"LOG_LEVEL": "WARNING"},
        service_env={"gateway": {"GATEWAY_RATE_LIMIT_PER_S": "0"}},
    )
    try:
        await cluster.start()
        login = await cluster.login()
        admin = {"x-api-key": login["user"]["apiKey"]}
        async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=30) as api:
            iid = (await api.post("/api/instances", headers=admin, json={"name": "bench"})).json()["id"]
            for _ in range(300):
                r = await api.get(f"/api/instances/{iid}/qr", headers=admin)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            phone = "1555" + f"{secrets.randbelow(10**7):07d}"
            r = await api.post(f"/api/admin/sim/instances/{iid}/scan", headers=admin, json={"phone": phone})
            r.raise_for_status()
            for _ in range(300):
                r = await api.get(f"/api/whatsapp/{iid}/status", headers=admin)
                if r.json().get("ready"):
                    break
                await asyncio.sleep(0.1)
        gateway = await load(
            f"{cluster.gateway_url}/api/whatsapp/{iid}/send",
            admin,
            {"phone": "79001234567", "message": "bench"},
            args.requests,
            args.concurrency,
        )
        bare = await bare_baseline(args.requests, args.concurrency, work_dir)
        return gateway, bare
    finally:
        await cluster.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    load_before = os.getloadavg()[1]
    gateway, bare = asyncio.run(run(args))
    load_after = os.getloadavg()[1]
    command = "python bench/gateway_bench.py " + shlex.join(sys.argv[1:])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Gateway sends ({stamp})\n",
        f"`{command}` — {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
        f"{args.requests} requests each; whole system as processes "
        f"(1 worker, simulator engine, PostgreSQL stores); 5-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after (numbers from a loaded machine are only comparable within one run).\n",
        "| target | requests/s | p50 ms | p99 ms | non-200 |",
        "|---|---|---|---|---|",
        f"| gateway `POST /api/whatsapp/{{id}}/send` | {gateway['rps']:.0f} | {gateway['p50_ms']:.1f} | "
        f"{gateway['p99_ms']:.1f} | {gateway['errors'] or 0} |",
        f"| bare FastAPI `POST /send` (uvicorn, same machine) | {bare['rps']:.0f} | {bare['p50_ms']:.1f} | "
        f"{bare['p99_ms']:.1f} | {bare['errors'] or 0} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
