"""Prometheus metrics of the session worker (bounded labels: never instance or user ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from wa_common.metrics import LATENCY_BUCKETS

SESSIONS = Gauge("wa_sessions", "WhatsApp sessions run by this worker, by status.", ["status"])
SHARDS_OWNED = Gauge("wa_shards_owned", "Shard leases held by this worker.")
LEASE_CHANGES = Counter(
    "wa_shard_lease_changes_total", "Shard lease changes (acquired, released, lost).", ["change"]
)
COMMANDS = Counter(
    "wa_worker_commands_total",
    "Commands and queries handled, by name and outcome (ok, error, expired, duplicate).",
    ["name", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "wa_worker_command_duration_seconds",
    "Time to handle a command or query.",
    ["name"],
    buckets=LATENCY_BUCKETS,
)
ENGINE_EVENTS = Counter("wa_worker_engine_events_total", "Engine events processed, by kind.", ["kind"])
SESSION_STARTS = Counter(
    "wa_worker_session_starts_total", "Session starts, by reason (create, takeover, reconnect).", ["reason"]
)
FAILOVER_START_SECONDS = Histogram(
    "wa_worker_shard_start_seconds",
    "Time to start a newly acquired shard's sessions.",
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PENDING = Gauge(
    "wa_worker_outbox_due", "Outbox entries found due at the last relay round (unconfirmed events)."
)
OUTBOX_RELAYED = Counter(
    "wa_worker_outbox_relayed_total", "Events published by the outbox relay (not on their normal path)."
)
SEND_PHASE_SECONDS = Histogram(
    "wa_worker_send_phase_seconds",
    "Where a send's time goes, by phase: queued (request made at the gateway -> handler start, "
    "from the request id's ULID time), lookup, claim, turn (waiting for the instance's turn), "
    "prepare, transmit (the engine), record (the commit of the message and its event).",
    ["phase"],
    buckets=LATENCY_BUCKETS,
)
