"""Session-worker benchmark: sessions per worker, memory per session, sends per second.

One worker process (``python -m wa_session_worker``, simulator engine) on a fresh RabbitMQ vhost
and a fresh PostgreSQL database. ``--sessions`` instances are created and linked through the
simulator; the worker's resident memory (``/proc/<pid>/status`` VmRSS) is read before and after,
giving memory per connected session. Then ``--sends`` text sends are made through the bus the way
the gateway makes them (RPC to the instance's shard queue) by ``--concurrency`` concurrent
callers, giving sends per second through one worker (idempotency record, store write,
``message_sent`` event confirmed by the broker, simulated network). Results are appended to
``bench/RESULTS.md`` with the command line.

    .venv/bin/python bench/worker_bench.py --sessions 200 --sends 2000 --concurrency 64

Environment: ``TEST_AMQP_HOST`` (default ``127.0.0.1:5672``), ``RABBITMQCTL``,
``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from wa_common.bus import EXCHANGE_COMMANDS, QUERY_ROUTING_KEY, Bus, RpcClient, shard_for, shard_queue
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Command, Query, Reply
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand, SessionQuery
from wa_common.sim_client import sim_scan

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is a package of the repository root
    sys.path.insert(0, str(ROOT))

from bench.common import report, table  # noqa: E402

AMQP_HOST = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")
RABBITMQCTL = os.environ.get("RABBITMQCTL", "rabbitmqctl")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
S = 8
USER = Caller(user_id="bench")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")


async def call(rpc: RpcClient, name: str, iid: str, payload: dict[str, Any], key: str | None = None) -> Reply:
    cmd = Command(
        name=name,
        caller=USER,
        instance_id=iid,
        payload=payload,
        idempotency_key=key,
        deadline=utcnow() + timedelta(seconds=30),
    )
    return await rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, S)), cmd)


async def ask(rpc: RpcClient, name: str, iid: str | None, caller: Caller = USER) -> Reply:
    return await rpc.call(
        EXCHANGE_COMMANDS, QUERY_ROUTING_KEY, Query(name=name, caller=caller, instance_id=iid)
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    vhost = f"wa_bench_{new_id().lower()}"
    subprocess.run([RABBITMQCTL, "-q", "add_vhost", vhost], check=True, timeout=60)
    subprocess.run([RABBITMQCTL, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
    amqp_url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    db = f"wa_bench_{new_id().lower()}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    db_url = f"{POSTGRES_URL.rpartition('/')[0]}/{db}"
    await asyncio.to_thread(upgrade, "wa_session_worker", db_url)
    env = {
        **os.environ,
        "WA_PROFILE": "embedded",
        "AMQP_URL": amqp_url,
        "WA_SHARDS": str(S),
        "WA_ENGINE": "simulator",
        "WORKER_ID": "bench-worker",
        "WORKER_PORT": "0",
        "WORKER_DATABASE_URL": db_url,
        "LOG_LEVEL": "WARNING",
    }
    log = tempfile.NamedTemporaryFile(prefix="worker-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "wa_session_worker"], env=env, stdout=log, stderr=log)
    bus = Bus(amqp_url, service="worker-bench", shard_count=S, prefetch=256, delivery_limit=5)
    try:
        await bus.connect()
        rpc = RpcClient(bus)
        await rpc.start()

        async def owns_all() -> bool:
            try:
                reply = await ask(rpc, SessionQuery.CLUSTER, None, Caller(user_id="a", role="admin"))
            except TimeoutError:
                return False
            return sum(len(w["shards"]) for w in reply.data["workers"] if w["alive"]) == S

        await wait_until(owns_all, 60, "worker owns every shard")
        await asyncio.sleep(1.0)  # let start-up allocations settle before the baseline
        base_kib = rss_kib(proc.pid)

        ids = [new_id() for _ in range(args.sessions)]
        phones = {iid: f"1777{n:07d}" for n, iid in enumerate(ids)}
        started = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def link(iid: str) -> None:
            async with sem:
                created = await call(rpc, SessionCommand.CREATE_INSTANCE, iid, {"name": iid})
                assert created.status == 201, created

                async def has_qr() -> bool:
                    return (await ask(rpc, SessionQuery.QR, iid)).status == 200

                await wait_until(has_qr, 60, "QR")
                code = (await ask(rpc, SessionQuery.QR, iid)).data["qrCode"]
                await sim_scan(bus, code, phones[iid])

                async def connected() -> bool:
                    return bool((await ask(rpc, SessionQuery.STATUS, iid)).data["status"] == "connected")

                await wait_until(connected, 60, "connected")

        await asyncio.gather(*(link(iid) for iid in ids))
        link_s = time.monotonic() - started
        await asyncio.sleep(1.0)
        sessions_kib = rss_kib(proc.pid)

        done = 0
        failures = 0
        send_sem = asyncio.Semaphore(args.concurrency)

        async def send(n: int) -> None:
            nonlocal done, failures
            src = ids[n % len(ids)]
            dst = phones[ids[(n + 1) % len(ids)]]
            async with send_sem:
                reply = await call(
                    rpc, SessionCommand.SEND_TEXT, src, {"phone": dst, "message": f"bench {n}"}, key=f"b{n}"
                )
            if reply.ok:
                done += 1
            else:
                failures += 1

        started = time.monotonic()
        await asyncio.gather(*(send(n) for n in range(args.sends)))
        send_s = time.monotonic() - started
        return {
            "sessions": args.sessions,
            "link_s": link_s,
            "base_mib": base_kib / 1024,
            "rss_mib": sessions_kib / 1024,
            "per_session_kib": (sessions_kib - base_kib) / max(1, args.sessions),
            "sends": args.sends,
            "ok": done,
            "failed": failures,
            "send_s": send_s,
            "sends_per_s": done / send_s if send_s else 0.0,
            "concurrency": args.concurrency,
        }
    finally:
        await bus.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([RABBITMQCTL, "-q", "delete_vhost", vhost], check=False, timeout=60)
        admin = await asyncpg.connect(POSTGRES_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    body = (
        f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}` "
        f"({os.cpu_count()} CPUs, simulator engine, PostgreSQL store, {S} shards, one worker)\n\n"
    ) + table(
        ["measure", "value"],
        ["sessions linked and connected", f"{r['sessions']} in {r['link_s']:.1f} s"],
        ["worker RSS before / after", f"{r['base_mib']:.0f} MiB / {r['rss_mib']:.0f} MiB"],
        ["memory per connected session", f"{r['per_session_kib']:.0f} KiB"],
        ["text sends through one worker", f"{r['ok']} ok, {r['failed']} failed in {r['send_s']:.1f} s"],
        ["sends per second", f"{r['sends_per_s']:.0f} (concurrency {r['concurrency']})"],
    )
    report("Session worker", body, write=not args.no_write)


if __name__ == "__main__":
    main()
