"""The ``bench/RESULTS.md`` section of the pipeline benchmark (newest first): the command, the
machine (cores, 5-min load average before and after), one table of the measures each beside its
same-run reference and the ratio, the CPU ms per send per process, and the loss figures.

Units: latencies in ms, rates per second, CPU in ms of CPU time per accepted send (per request
for the bare reference), durations in s.
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import SECRET, LoadResult, pct

__all__ = ["RESULTS", "SECRET", "prepend", "section"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _ratio(value: float, reference: float, fmt: str = "{:.1f}x") -> str:
    if not reference or math.isnan(value) or math.isnan(reference):
        return "—"
    return fmt.format(value / reference)


def _p(values: list[float]) -> tuple[float, float]:
    return pct(values, 0.5), pct(values, 0.99)


def _latency_row(name: str, values: list[float], ref_name: str, ref: dict[str, float]) -> str:
    p50, p99 = _p(values)
    return (
        f"| {name} p50 / p99 ms | {p50:.0f} / {p99:.0f} | {ref_name} {ref['p50_ms']:.1f} / "
        f"{ref['p99_ms']:.1f} | {_ratio(p50, ref['p50_ms'])} / {_ratio(p99, ref['p99_ms'])} |"
    )


def _statuses(r: LoadResult) -> str:
    """Non-200 outcomes, e.g. ``503 x4, no answer in 60 s x1``."""
    if not r.statuses:
        return "none"
    return ", ".join(
        f"{'no answer in 60 s' if code == 0 else code} x{n}" for code, n in sorted(r.statuses.items())
    )


def _loss(r: LoadResult) -> str:
    return (
        f"{r.label}: {len(r.accepted)} accepted, not accepted: {_statuses(r)}, "
        f"{r.lost} accepted without webhook, {r.bad_signatures} bad signatures"
        + (
            f" (non-200 answered after p50 {pct(r.refused_ms, 0.5):.0f} ms, first bodies "
            f"{'; '.join(f'{k}: {v!r}' for k, v in sorted(r.first_error.items()))}; "
            f"{r.refused_hooked} of them sent all the same: `message_sent` webhook received)"
            if r.refused
            else ""
        )
    )


def section(args: argparse.Namespace, out: dict[str, Any], command: str, loads: tuple[float, float]) -> str:
    """The Markdown section of one run (``out`` from ``pipeline_bench.run``)."""
    bare, amqp = out["bare"], out["amqp"]
    sat: LoadResult = out["saturation"]
    one: LoadResult = out["one"]
    opn: LoadResult = out["open"]
    cpu: dict[str, float] = sat.extra["cpu_ms"]
    system = {k: v for k, v in cpu.items() if k != "bench"}
    total = sum(system.values())
    pg = " + PostgreSQL" if args.stores == "postgres" else ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    one_rate = len(one.accepted) / one.api_s if one.api_s else 0.0
    rows = [
        "| measure | value | reference (same run) | ratio |",
        "|---|---|---|---|",
        f"| reference: bare FastAPI (uvicorn, 1 process, lean client, {args.clients} clients) req/s | "
        f"{bare['rps']:.0f} | — | — |",
        f"| reference: bare FastAPI p50 / p99 ms | {bare['p50_ms']:.1f} / {bare['p99_ms']:.1f} | — | — |",
        f"| reference: bare FastAPI CPU ms per request (uvicorn; lean client) | {bare['cpu_ms']:.2f} "
        f"({bare['client_cpu_ms']:.2f}) | — | — |",
        f"| reference: aio-pika confirmed publish → consume round trips/s, p50 / p99 ms | "
        f"{amqp['rate']:.0f}, {amqp['p50_ms']:.1f} / {amqp['p99_ms']:.1f} | — | — |",
        f"| saturation ({args.instances} instances, {args.clients} clients): sends/s end to end "
        f"(API accepted → webhook received) | {sat.rate:.1f} | bare FastAPI {bare['rps']:.0f} req/s | "
        f"{_ratio(sat.rate, bare['rps'], '{:.3f}')} |",
        _latency_row("saturation: send API", sat.api_ms, "bare FastAPI", bare),
        _latency_row("saturation: event → webhook", sat.hook_ms, "aio-pika round trip", amqp),
        f"| saturation: CPU ms per send, whole system (services + RabbitMQ{pg}) | {total:.1f} | "
        f"bare FastAPI {bare['cpu_ms']:.2f} ms/request | {_ratio(total, bare['cpu_ms'])} |",
        f"| one instance, {args.one_clients} clients x {args.one_sends} sends: sends/s (API) | "
        f"{one_rate:.1f} | bare FastAPI {bare['rps']:.0f} req/s | "
        f"{_ratio(one_rate, bare['rps'], '{:.3f}')} |",
        _latency_row("one instance: send API", one.api_ms, "bare FastAPI", bare),
        f"| one instance: order violations, history (missing / out of order) | "
        f"{one.extra['history_missing']} / {one.extra['history_disorder']} | 0 / 0 | — |",
        f"| one instance: order violations, webhooks (missing / out of order) | "
        f"{one.extra['webhook_missing']} / {one.extra['webhook_disorder']} | 0 / 0 | — |",
        f"| open loop: offered {args.rate:.0f} sends/s for {args.open_seconds:.0f} s over {args.instances} "
        f"instances (issued at {opn.offered_rate:.0f}/s, {opn.extra['connections']} connections): "
        f"accepted sends completed end to end per s | {opn.rate:.1f} | "
        f"offered {args.rate:.0f} | {_ratio(opn.rate, args.rate, '{:.2f}')} |",
        _latency_row("open loop: send API (from the scheduled time)", opn.api_ms, "bare FastAPI", bare),
        _latency_row("open loop: event → webhook", opn.hook_ms, "aio-pika round trip", amqp),
    ]
    if "kill" in out:
        k: LoadResult = out["kill"]
        rows.append(
            f"| kill: SIGKILL of {k.extra['victim']} ({k.extra['victim_sessions']} sessions) during "
            f"{args.sends} sends: accepted / stored / `message_sent` webhooks | {len(k.accepted)} / "
            f"{k.extra['stored']} / {k.extra['webhooks']} | equal (no loss) | "
            f"{'equal' if len(k.accepted) == k.extra['stored'] == k.extra['webhooks'] else 'LOSS'} |"
        )
    if "failover" in out:
        victim, sessions, failover_s = out["failover"]
        rows += [
            f"| failover: SIGKILL of {victim} ({sessions} sessions, {out['linked']} connected instances) "
            f"until all connected again | {failover_s:.1f} s | lease TTL 9 s + renew 2 s (defaults) | — |",
            f"| linking {out['linked'] - args.instances} more instances (create, QR, scan, connected) | "
            f"{out['link_s']:.1f} s | — | — |",
        ]
    raw: dict[str, float] = sat.extra["cpu_raw_ms"]
    idle: dict[str, float] = sat.extra["idle"]
    raw_total = sum(v for k, v in raw.items() if k != "bench")
    cpu_rows = [
        "| process | CPU ms per send (idle subtracted) | share of system | CPU ms per send (raw) | "
        "idle background (CPU ms per s) |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {ms:.2f} | {ms / total * 100 if total else 0:.0f}% | {raw.get(name, 0.0):.2f} | "
            f"{idle.get(name, 0.0) * 1000:.0f} |"
            for name, ms in sorted(system.items(), key=lambda kv: -kv[1])
        ),
        f"| **total (system)** | **{total:.2f}** | 100% | **{raw_total:.2f}** | "
        f"{sum(v for n, v in idle.items() if n != 'bench') * 1000:.0f} |",
        "| bench process (lean clients + webhook receiver; not in the total) | "
        f"{cpu.get('bench', 0.0):.2f} | — | {raw.get('bench', 0.0):.2f} | "
        f"{idle.get('bench', 0.0) * 1000:.0f} |",
    ]
    losses = [_loss(r) for r in (sat, one, opn, out.get("kill")) if r is not None]
    kill_text = ""
    if "kill" in out:
        k = out["kill"]
        kill_text = (
            f" Kill: {len(k.accepted)} sends accepted (200), {len(k.refused)} not accepted "
            f"({_statuses(k)}); of the accepted, {k.extra['stored']} stored and {k.extra['webhooks']} "
            f"with a `message_sent` webhook after up to 120 s; of the not accepted, "
            f"{k.extra['stored_refused']} stored anyway and {k.extra['webhooks_refused']} with a webhook."
        )
    lines = [
        f"## Throughput (issue 15), end to end — {stamp}",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPU cores; 5-min load average {loads[0]:.1f} before, "
        f"{loads[1]:.1f} after; whole system as processes: {args.workers} session workers on the simulator "
        f"engine, {'PostgreSQL' if args.stores == 'postgres' else 'SQLite'} stores, {args.shards} shards; "
        f"lean keep-alive client; texts to an external simulated contact; {args.sends} sends at saturation)",
        "",
        *rows,
        "",
        f"CPU per send at saturation ({len(sat.accepted)} sends, {sat.elapsed_s:.1f} s; utime + stime from "
        "/proc per process; rabbitmq = every process of the rabbitmq user (the broker is shared with "
        "other users of the machine)"
        + (
            ", postgresql = the postgres user's shared processes and the backends of this run's databases"
            if pg
            else ""
        )
        + "; idle background measured over 5 s before and subtracted):",
        "",
        *cpu_rows,
        "",
        "Losses: " + "; ".join(losses) + "." + kill_text + " Ratios are the meaningful figures on a shared "
        "machine; absolute numbers move with the load average.",
        "",
        "",
    ]
    return "\n".join(lines)


def prepend(text: str) -> None:
    """Put ``text`` at the top of ``bench/RESULTS.md`` (newest first)."""
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    RESULTS.write_text(text + existing)
