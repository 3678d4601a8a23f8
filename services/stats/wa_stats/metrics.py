"""Prometheus metrics of the stats service (besides the shared ``wa_bus_*``/``wa_http_*``).

Labels are bounded: ``type`` is a known event type or ``other``, ``limit`` one of the three limit
names, ``reason`` one of ``USAGE_REJECT_REASONS``; never a user or instance id. Queries are counted
by the request router (``wa_bus_requests_total{name, outcome}``, ``wa_bus_request_duration_seconds``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from wa_common.schemas import EventType

KNOWN_TYPES = frozenset(str(t) for t in EventType)

EVENTS_PROCESSED = Counter(
    "wa_stats_events_processed_total",
    "Events handled by the stats consumer (duplicates included), by event type.",
    ["type"],
)
DUPLICATES_SKIPPED = Counter(
    "wa_stats_duplicate_events_skipped_total",
    "Redelivered events skipped because their id was already counted, by event type.",
    ["type"],
)
EVENT_LAG = Histogram(
    "wa_stats_event_lag_seconds",
    "Time from an event's occurred_at to its processing by stats.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
LIMIT_EVENTS_PUBLISHED = Counter(
    "wa_stats_limit_events_published_total",
    "limit_exceeded events published, by limit name.",
    ["limit"],
)
USAGE_REJECT_REASONS = ("malformed", "user_id", "count", "instance_id", "foreign_instance")
USAGE_ITEMS_REJECTED = Counter(
    "wa_stats_api_usage_items_rejected_total",
    "Items of usage.api_calls batches not counted as sent, by reason: dropped (malformed, user_id, "
    "count) or counted for the user without their instance (instance_id: not an id; "
    "foreign_instance: another user's instance).",
    ["reason"],
)


def type_label(event_type: str) -> str:
    """Bounded label for an event type (unknown types collapse to ``other``)."""
    return event_type if event_type in KNOWN_TYPES else "other"
