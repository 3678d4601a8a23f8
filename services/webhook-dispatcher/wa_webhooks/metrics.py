"""Prometheus metrics of the dispatcher (bounded labels only: never instance ids or URLs)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from wa_common.metrics import LATENCY_BUCKETS

DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

ATTEMPTS = Counter(
    "wa_webhook_attempts_total",
    "Webhook HTTP attempts by outcome class (2xx, 3xx, 4xx, 5xx, timeout, error).",
    ["outcome"],
)
DELIVERIES_FINISHED = Counter(
    "wa_webhook_deliveries_total",
    "Webhook deliveries that reached a final state (delivered, failed, cancelled).",
    ["status"],
)
DELIVERY_LATENCY = Histogram(
    "wa_webhook_delivery_latency_seconds",
    "Time from the event occurring to its successful delivery (retries included).",
    buckets=DELIVERY_BUCKETS,
)
ATTEMPT_SECONDS = Histogram(
    "wa_webhook_attempt_duration_seconds",
    "Duration of one webhook HTTP attempt (connect to response or error).",
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PENDING = Gauge("wa_webhook_outbox_pending", "Deliveries pending in the outbox (all replicas).")
OUTBOX_OLDEST_AGE = Gauge(
    "wa_webhook_outbox_oldest_pending_age_seconds",
    "Age of the oldest pending delivery (0 when none is pending).",
)
IN_FLIGHT = Gauge("wa_webhook_deliveries_in_flight", "Deliveries this process is attempting or queuing now.")
DELIVERIES_PRUNED = Counter(
    "wa_webhook_deliveries_pruned_total",
    "Finished deliveries deleted after WEBHOOKS_RETENTION_DAYS (with their attempts).",
)
