"""Webhook dispatcher benchmark: deliveries/s to a local receiver and event → receiver latency.

Runs the real dispatcher (outbox on the given store, the SSRF-guarded HTTP client, a loopback
receiver that answers 200 at once). Two phases:

- burst: ``--events`` events written at once; throughput = events / (last arrival - first write);
- paced: ``--rate`` events/s for ``--seconds``; latency p50/p99 from the event being handed to the
  dispatcher to its arrival at the receiver (includes the outbox write, claim, HTTP).

With ``--amqp-url`` events go through RabbitMQ (``wa.events`` → the dispatcher's consumer, i.e.
the whole path); without it they are handed to ``Dispatcher.ingest`` directly (no broker).
Results are appended to ``bench/RESULTS.md`` with the command line.

    .venv/bin/python bench/webhooks_bench.py --database-url postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wa_common.bus import Bus
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Event
from wa_common.schemas.events import InstanceSnapshot, WebhookSettings
from wa_webhooks.main import build_app
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import Repository
from wa_webhooks.settings import WebhooksSettings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are packages of the repository root
    sys.path.insert(0, str(ROOT))

from bench.common import report, table  # noqa: E402
from tests.support.http import HttpServer  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    receiver = await HttpServer().start()
    settings = WebhooksSettings(
        amqp_url=args.amqp_url or "amqp://guest:guest@127.0.0.1:5672/",
        database_url=args.database_url,
        profile="embedded",
        allow_private_targets=True,
        per_host_concurrency=args.per_host_concurrency,
        poll_interval_s=0.2,
    )
    await asyncio.to_thread(upgrade, "wa_webhooks", settings.database_url)
    runtime: Any = None
    bus: Bus | None = None
    tasks: list[asyncio.Task[Any]] = []
    if args.amqp_url:
        app = build_app(settings)
        runtime = app.state.runtime
        await runtime.start()
        dispatcher: Dispatcher = app.state.dispatcher
        bus = Bus(args.amqp_url, service="webhooks-bench")
        await bus.connect(declare=False, timeout_s=60)
    else:
        from wa_common.db import create_engine

        dispatcher = Dispatcher(Repository(create_engine(settings.database_url)), settings)
        tasks.append(asyncio.create_task(dispatcher.run()))

    iid = new_id()
    snap = InstanceSnapshot(
        instance_id=iid,
        user_id="bench",
        name="bench",
        webhook_url=receiver.url(),
        webhook_enabled=True,
        webhook_settings=WebhookSettings(secret="bench-secret"),
        updated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    if bus is not None:
        await bus.publish_event(Event(type="instance.created", instance_id=iid, data=snap.dump()))
        while await dispatcher.repo.endpoints.get(iid) is None:
            await asyncio.sleep(0.05)
    else:
        await dispatcher.repo.endpoints.apply_snapshot(snap)

    sent: dict[str, float] = {}

    async def emit(n: int) -> None:
        events = [
            Event(
                type="message_received",
                instance_id=iid,
                data={
                    "instanceId": iid,
                    "messageId": new_id(),
                    "from": "79001234567@s.whatsapp.net",
                    "body": "Привет! 😀 benchmark",
                    "type": "conversation",
                    "timestamp": int(time.time()),
                    "hasMedia": False,
                    "pushName": "Bench",
                },
            )
            for _ in range(n)
        ]
        now = time.monotonic()
        for e in events:
            sent[e.id] = now
        if bus is not None:
            await asyncio.gather(*(bus.publish_event(e) for e in events))
        else:
            await asyncio.gather(*(dispatcher.ingest(e) for e in events))

    async def wait_all(deadline_s: float = 300) -> None:
        end = time.monotonic() + deadline_s
        while len({r.headers["x-webhook-id"] for r in receiver.requests}) < len(sent):
            if time.monotonic() > end:
                raise TimeoutError("not every event arrived")
            await asyncio.sleep(0.02)

    # Burst.
    t0 = time.monotonic()
    for i in range(0, args.events, 200):
        await emit(min(200, args.events - i))
    await wait_all()
    arrivals = [r.at for r in receiver.requests]
    burst_s = max(arrivals) - t0
    burst_rate = args.events / burst_s
    burst_lat = [r.at - sent[r.headers["x-webhook-id"]] for r in receiver.requests]

    # Paced.
    receiver.requests.clear()
    sent.clear()
    interval = 1 / args.rate
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < args.seconds:
        await emit(1)
        k += 1
        await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
    await wait_all()
    lat = [r.at - sent[r.headers["x-webhook-id"]] for r in receiver.requests]

    for t in tasks:
        t.cancel()
    if bus is not None:
        await bus.close()
    if runtime is not None:
        await runtime.stop()
    else:
        await dispatcher.close()
        await dispatcher.repo.engine.dispose()
    await receiver.stop()
    return {
        "burst_events": args.events,
        "burst_seconds": burst_s,
        "burst_rate": burst_rate,
        "burst_p50_ms": pct(burst_lat, 0.5) * 1000,
        "burst_p99_ms": pct(burst_lat, 0.99) * 1000,
        "paced_events": len(lat),
        "paced_rate": args.rate,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None, help="store (default: a temporary SQLite file)")
    parser.add_argument("--amqp-url", default=None, help="go through RabbitMQ (a vhost of its own)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="paced phase, events/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="paced phase duration")
    parser.add_argument("--per-host-concurrency", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    tmp = None
    if args.database_url is None:
        tmp = tempfile.mkdtemp()
        args.database_url = f"sqlite:///{tmp}/bench.db"
    r = asyncio.run(run(args))
    store = args.database_url.split(":", 1)[0]
    path = "bus → consumer → outbox" if args.amqp_url else "ingest → outbox"
    body = (
        f"`{shlex.join(['.venv/bin/python', 'bench/webhooks_bench.py', *sys.argv[1:]])}`\n\n"
        f"Store {store}, {path} → HTTP POST to a loopback receiver (200 at once), one endpoint, "
        f"per-host concurrency {args.per_host_concurrency}, load average {os.getloadavg()[0]:.1f}.\n\n"
    ) + table(
        ["phase", "events", "deliveries/s", "p50 latency", "p99 latency"],
        [
            "burst",
            r["burst_events"],
            f"{r['burst_rate']:.0f}",
            f"{r['burst_p50_ms']:.0f} ms",
            f"{r['burst_p99_ms']:.0f} ms",
        ],
        [
            f"paced {r['paced_rate']:.0f}/s",
            r["paced_events"],
            "—",
            f"{r['p50_ms']:.1f} ms",
            f"{r['p99_ms']:.1f} ms",
        ],
    )
    report("webhooks_bench", body, write=not args.no_write)


if __name__ == "__main__":
    main()
