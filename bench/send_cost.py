"""Cost of a send (issue 15) on its own: CPU ms per send per process, summed over the whole
system (services, RabbitMQ, PostgreSQL), with sends/s and latencies (ms), driven by the lean
client. ``python -m bench`` measures the same at saturation beside its references; this script is
the quicker loop for profiling one change.

    .venv/bin/python -m bench.send_cost --instances 20 --clients 50 --sends 2000
"""

from __future__ import annotations

import argparse
import asyncio

import httpx

from bench.cpu import CpuMeter, per_operation_ms
from bench.load import Hooks, closed_loop, meter_for, pct
from bench.pipeline_bench import Bench, bench_cluster

__all__ = ["main", "meter_for"]


async def run(args: argparse.Namespace) -> None:
    async with bench_cluster("send-cost-", workers=args.workers, shards=args.shards, stores=args.stores) as (
        cluster,
        _,
        work_dir,
    ):
        key = (await cluster.login())["user"]["apiKey"]
        hooks = Hooks()
        async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=60) as api:
            bench = Bench(cluster, api, {"x-api-key": key}, hooks)
            await hooks.receiver.start()
            try:
                senders = await bench.create_and_link(args.instances, webhook=True)
                url = cluster.gateway_url
                await closed_loop("warm", url, key, hooks, senders, min(200, args.sends), args.clients)
                meter = meter_for(cluster)
                idle = await asyncio.to_thread(meter.idle_rate, 5.0)
                before = meter.snapshot()
                result = await closed_loop("cost", url, key, hooks, senders, args.sends, args.clients)
                after = meter.snapshot()
            finally:
                await hooks.receiver.stop()
        per = per_operation_ms(CpuMeter.used(before, after), after.at - before.at, idle, len(result.accepted))
        system = {k: v for k, v in per.items() if k != "bench"}
        print(
            f"sends {len(result.accepted)} ok {len(result.refused)} not ok {result.lost} lost; "
            f"{result.rate:.1f} sends/s e2e; api p50/p99 {pct(result.api_ms, 0.5):.0f}/"
            f"{pct(result.api_ms, 0.99):.0f} ms; hook p50/p99 {pct(result.hook_ms, 0.5):.0f}/"
            f"{pct(result.hook_ms, 0.99):.0f} ms"
        )
        for name, ms in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {name:40s} {ms:7.2f} ms/send")
        print(f"  {'TOTAL (system)':40s} {sum(system.values()):7.2f} ms/send")
        if args.keep:
            print("work dir", work_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stores", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--keep", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
