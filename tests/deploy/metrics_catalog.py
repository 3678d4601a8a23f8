"""Metric names the dashboard and alert rules may use without a running service exposing them.

``RABBITMQ`` lists metrics of RabbitMQ's own Prometheus plugin (rabbitmq_prometheus), from its
documentation: https://github.com/rabbitmq/rabbitmq-server/blob/main/deps/rabbitmq_prometheus/metrics.md
(sections Global counters, Generic, Connections, Channels, Queues). The compose and Kubernetes
Prometheus scrape ``/metrics/per-object``, where the queue metrics carry ``queue`` and ``vhost``.

``AWAITED`` lists service metrics the dashboard/rules already query but which no service exposes
yet (colleagues are adding them). Each is reported as an expected failure (XFAIL) until its
service exposes it (then XPASS: remove it here). A queried metric that is neither exposed nor
listed here fails the tests.
"""

from __future__ import annotations

RABBITMQ = {
    # Global counters
    "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total",
    "rabbitmq_global_messages_dead_lettered_delivery_limit_total",
    "rabbitmq_global_messages_dead_lettered_rejected_total",
    "rabbitmq_global_publishers",
    "rabbitmq_global_consumers",
    # Generic
    "rabbitmq_build_info",
    "rabbitmq_consumers",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_resident_memory_limit_bytes",
    # Connections and channels
    "rabbitmq_connections",
    "rabbitmq_connections_opened_total",
    "rabbitmq_connections_closed_total",
    "rabbitmq_channels",
    # Queues
    "rabbitmq_queue_consumers",
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_messages_published_total",
    "rabbitmq_queues",
}

# Empty now: every service metric the dashboard and rules query is exposed. Add an entry
# ("metric name": "service: what it will be") only for a metric a colleague is adding right now.
AWAITED: dict[str, str] = {}
