"""Prometheus metrics shared by every service (prometheus-client, default registry).

Naming follows https://prometheus.io/docs/practices/naming/: a ``wa_`` prefix, ``_total`` for
counters, ``_seconds`` for durations, base units. Labels are bounded: never an instance id, user
id or raw URL path; shard queue names collapse to ``wa.shard`` and reply queues to ``wa.reply``.
The ``job``/``instance`` target labels added by Prometheus tell services apart.
"""

from __future__ import annotations

import re

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BUILD_INFO = Gauge(
    "wa_build_info", "Service name and version of this process (always 1).", ["service", "version"]
)

BUS_PUBLISHED = Counter(
    "wa_bus_messages_published_total",
    "Messages published, by exchange and outcome (confirmed, returned, nacked, error).",
    ["exchange", "outcome"],
)
BUS_CONSUMED = Counter("wa_bus_messages_consumed_total", "Messages delivered to a handler.", ["queue"])
BUS_ACKED = Counter(
    "wa_bus_messages_acked_total", "Messages acknowledged after their handler succeeded.", ["queue"]
)
BUS_NACKED = Counter(
    "wa_bus_messages_nacked_total",
    "Messages negatively acknowledged; requeue=false sends them to the dead-letter queue.",
    ["queue", "requeue"],
)
BUS_HANDLER_SECONDS = Histogram(
    "wa_bus_handler_duration_seconds", "Time spent in a message handler.", ["queue"], buckets=LATENCY_BUCKETS
)
RPC_REQUESTS = Counter(
    "wa_rpc_requests_total",
    "Requests sent over the bus, by target and outcome (ok, error, timeout).",
    ["target", "outcome"],
)
RPC_SECONDS = Histogram(
    "wa_rpc_request_duration_seconds", "Round-trip time of bus requests.", ["target"], buckets=LATENCY_BUCKETS
)
REQUESTS_HANDLED = Counter(
    "wa_bus_requests_total",
    "Bus requests (commands, queries) answered, by name and outcome (ok, error, expired).",
    ["name", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "wa_bus_request_duration_seconds",
    "Time to answer a bus request, by name.",
    ["name"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "wa_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "wa_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("wa_http_requests_in_flight", "HTTP requests being served now.")
BACKGROUND_TASK_FAILURES = Counter(
    "wa_background_task_failures_total", "Background tasks that ended with an exception.", ["task"]
)

_SHARD = re.compile(r"^wa\.shard\.\d+$")


def queue_label(queue: str) -> str:
    """Bounded label for a queue name (``wa.shard.17`` → ``wa.shard``, reply queues → ``wa.reply``)."""
    if _SHARD.match(queue):
        return "wa.shard"
    if queue.startswith("wa.reply.") or queue.startswith("amq."):
        return "wa.reply"
    if queue.startswith("wa.live."):
        return "wa.live"
    return queue


def metrics_response() -> Response:
    """The text exposition of the default registry as a Starlette response."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


BATCH_SIZE = Histogram(
    "wa_batch_size",
    "Items flushed together by a group commit (wa_common.batching.GroupCommit), by batcher name.",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_FLUSH_SECONDS = Histogram(
    "wa_batch_flush_duration_seconds",
    "Time one group-commit window took to flush (a transaction, a publish), by batcher name.",
    ["batcher"],
    buckets=LATENCY_BUCKETS,
)
