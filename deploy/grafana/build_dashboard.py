"""Generate deploy/grafana/dashboards/wa.json (the provisioned Grafana dashboard).

The dashboard JSON is committed; this script is its source. Edit the panels here, then run
``.venv/bin/python deploy/grafana/build_dashboard.py``; ``tests/deploy/test_grafana.py`` fails
when the committed JSON and this script disagree, and when a panel queries a metric that no
service exposes.

Conventions: ``job`` is the service name (compose job names, Kubernetes Service names);
``instance`` tells replicas apart (one per session worker). Gateway routes are grouped by their
first two path segments (``/api/instances/{id}/send-text`` -> ``/api/instances``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "wa.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"


# Gateway route -> route group (first two path segments).
def _group(expr: str) -> str:
    return f'label_replace({expr}, "group", "$1", "route", "^(/[^/]+(?:/[^/{{]+)?).*$")'


class _Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        w: int = 8,
        h: int = 8,
        description: str = "",
        stack: bool = False,
    ) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        defaults: dict[str, Any] = {"unit": unit}
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
        panel: dict[str, Any] = {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
            if kind == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            "targets": [
                {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def build() -> dict[str, Any]:
    lay = _Layout()
    gw = 'job="gateway"'

    lay.row("Overview")
    lay.panel(
        "Targets up",
        [
            (
                'sum by (job) (up{job=~"gateway|auth|session-worker|webhook-dispatcher|stats|rabbitmq"})',
                "{{job}}",
            )
        ],
        kind="stat",
        w=12,
        h=4,
    )
    lay.panel(
        "Versions",
        [("count by (service, version) (wa_build_info)", "{{service}} {{version}}")],
        kind="stat",
        w=12,
        h=4,
    )

    lay.row("Gateway (RED)")
    total = f"rate(wa_http_requests_total{{{gw}}}[{RI}])"
    errors = f'rate(wa_http_requests_total{{{gw},status=~"5.."}}[{RI}])'
    lay.panel(
        "Request rate by route group",
        [(f"sum by (group) ({_group(f'rate(wa_http_requests_total{{{gw}}}[{RI}])')})", "{{group}}")],
        unit="reqps",
    )
    lay.panel(
        "Error ratio (5xx) by route group",
        [(f"sum by (group) ({_group(errors)}) / sum by (group) ({_group(total)})", "{{group}}")],
        unit="percentunit",
    )
    lay.panel(
        "Client errors (4xx) by status",
        [(f'sum by (status) (rate(wa_http_requests_total{{{gw},status=~"4.."}}[{RI}]))', "{{status}}")],
        unit="reqps",
    )
    for q in ("0.5", "0.99"):
        lay.panel(
            f"Latency p{round(float(q) * 100)} by route group",
            [
                (
                    f"histogram_quantile({q}, sum by (le, group) "
                    f"({_group(f'rate(wa_http_request_duration_seconds_bucket{{{gw}}}[{RI}])')}))",
                    "{{group}}",
                )
            ],
            unit="s",
            w=9,
        )
    lay.panel(
        "Requests in flight",
        [('sum by (instance) (wa_http_requests_in_flight{job="gateway"})', "{{instance}}")],
        w=6,
    )

    lay.row("Sessions and shards")
    lay.panel(
        "Sessions by status",
        [('sum by (status) (wa_sessions{job="session-worker"})', "{{status}}")],
        stack=True,
    )
    lay.panel(
        "Sessions per worker",
        [('sum by (instance) (wa_sessions{job="session-worker"})', "{{instance}}")],
        stack=True,
    )
    lay.panel(
        "Shards per worker",
        [
            ('sum by (instance) (wa_shards_owned{job="session-worker"})', "{{instance}}"),
            ('sum(wa_shards_owned{job="session-worker"})', "total owned"),
        ],
        description="The total must equal WA_SHARDS; alert WaShardUnowned fires when it is lower.",
    )
    lay.panel(
        "Engine errors by operation",
        [
            (
                f'sum by (engine, operation) (rate(wa_engine_errors_total{{job="session-worker"}}[{RI}]))',
                "{{engine}} {{operation}}",
            )
        ],
        unit="ops",
    )
    lay.panel(
        "Shard lease changes",
        [
            (
                f'sum by (change) (increase(wa_shard_lease_changes_total{{job="session-worker"}}[{RI}]))',
                "{{change}}",
            )
        ],
        description="acquired / released / lost: steady state is flat; bursts when workers join or leave.",
    )
    lay.panel(
        "Simulator double connections",
        [('sum(increase(wa_sim_double_connections_total{job="session-worker"}[1h]))', "last hour")],
        kind="stat",
        description="Must stay 0: a simulated account live on two workers at once (ownership violated).",
    )

    lay.row("Traffic")
    lay.panel(
        "Send rate (worker commands)",
        [
            (
                f'sum by (name, outcome) (rate(wa_worker_commands_total{{job="session-worker",'
                f'name=~"message[.]send_.*"}}[{RI}]))',
                "{{name}} {{outcome}}",
            )
        ],
        unit="ops",
        description="message.send_text / message.send_media commands executed by the shard owners.",
    )
    lay.panel(
        "Inbound rate (events counted by stats)",
        [
            (
                f'sum by (type) (rate(wa_stats_events_processed_total{{job="stats",'
                f'type=~"message_received|message_status"}}[{RI}]))',
                "{{type}}",
            )
        ],
        unit="ops",
    )
    lay.panel(
        "Worker command p99 by name",
        [
            (
                f"histogram_quantile(0.99, sum by (le, name) "
                f'(rate(wa_worker_command_duration_seconds_bucket{{job="session-worker"}}[{RI}])))',
                "{{name}}",
            )
        ],
        unit="s",
    )
    lay.panel(
        "Commands and queries by outcome",
        [(f'sum by (outcome) (rate(wa_worker_commands_total{{job="session-worker"}}[{RI}]))', "{{outcome}}")],
        unit="ops",
        w=12,
    )
    lay.panel(
        "Events published by workers (wa.events)",
        [
            (
                f'sum by (instance) (rate(wa_bus_messages_published_total{{job="session-worker",'
                f'exchange="wa.events",outcome="confirmed"}}[{RI}]))',
                "{{instance}}",
            )
        ],
        unit="ops",
        w=12,
    )

    lay.row("Event bus")
    lay.panel(
        "Published by exchange and outcome",
        [
            (
                f"sum by (exchange, outcome) (rate(wa_bus_messages_published_total[{RI}]))",
                "{{exchange}} {{outcome}}",
            )
        ],
        unit="ops",
    )
    lay.panel(
        "Consumed and nacked by queue",
        [
            (f"sum by (queue) (rate(wa_bus_messages_consumed_total[{RI}]))", "consumed {{queue}}"),
            (
                f"sum by (queue, requeue) (rate(wa_bus_messages_nacked_total[{RI}]))",
                "nacked {{queue}} requeue={{requeue}}",
            ),
        ],
        unit="ops",
    )
    lay.panel(
        "Handler p99 by queue",
        [
            (
                f"histogram_quantile(0.99, sum by (le, queue) "
                f"(rate(wa_bus_handler_duration_seconds_bucket[{RI}])))",
                "{{queue}}",
            )
        ],
        unit="s",
    )
    lay.panel(
        "Bus RPC by target and outcome",
        [(f"sum by (target, outcome) (rate(wa_rpc_requests_total[{RI}]))", "{{target}} {{outcome}}")],
        unit="reqps",
    )
    lay.panel(
        "Bus RPC p99 by target",
        [
            (
                f"histogram_quantile(0.99, sum by (le, target) "
                f"(rate(wa_rpc_request_duration_seconds_bucket[{RI}])))",
                "{{target}}",
            )
        ],
        unit="s",
    )
    lay.panel(
        "Background task failures",
        [(f"sum by (job, task) (increase(wa_background_task_failures_total[{RI}]))", "{{job}} {{task}}")],
    )
    lay.panel(
        "Queue depth (ready), top 15",
        [('topk(15, sum by (queue) (rabbitmq_queue_messages_ready{job="rabbitmq"}))', "{{queue}}")],
        description="From RabbitMQ's Prometheus plugin (/metrics/per-object).",
    )
    lay.panel(
        "Unacknowledged, top 15",
        [('topk(15, sum by (queue) (rabbitmq_queue_messages_unacked{job="rabbitmq"}))', "{{queue}}")],
    )
    lay.panel(
        "Dead-letter queues",
        [('sum by (queue) (rabbitmq_queue_messages{job="rabbitmq",queue=~".*\\\\.dead"})', "{{queue}}")],
        description="Messages whose handler failed BUS_DELIVERY_LIMIT times (or rejected at once); "
        "inspect and replay or purge. Each queue keeps at most BUS_DEAD_LETTER_MAX_LENGTH messages and "
        "BUS_DEAD_LETTER_MAX_BYTES bytes, dropping its oldest first.",
    )
    lay.panel(
        "Dead letters dropped (dead-letter queue full)",
        [(f"sum by (queue) (increase(wa_bus_dead_letters_dropped_total[{RI}]))", "{{queue}}")],
        description="Oldest dead letters dropped from a full <queue>.dead, by queue family "
        "(wa.shard = every shard queue); counted by whichever service took the drop notice.",
    )
    lay.panel(
        "Broker message rates",
        [
            (f'sum(rate(rabbitmq_global_messages_received_total{{job="rabbitmq"}}[{RI}]))', "received"),
            (f'sum(rate(rabbitmq_global_messages_routed_total{{job="rabbitmq"}}[{RI}]))', "routed"),
            (f'sum(rate(rabbitmq_global_messages_delivered_total{{job="rabbitmq"}}[{RI}]))', "delivered"),
            (
                f'sum(rate(rabbitmq_global_messages_acknowledged_total{{job="rabbitmq"}}[{RI}]))',
                "acknowledged",
            ),
        ],
        unit="ops",
    )
    lay.panel(
        "Broker connections, channels, consumers",
        [
            ('sum(rabbitmq_connections{job="rabbitmq"})', "connections"),
            ('sum(rabbitmq_channels{job="rabbitmq"})', "channels"),
            ('sum(rabbitmq_consumers{job="rabbitmq"})', "consumers"),
        ],
    )

    lay.row("Webhooks")
    lay.panel(
        "Attempts by outcome",
        [
            (
                f'sum by (outcome) (rate(wa_webhook_attempts_total{{job="webhook-dispatcher"}}[{RI}]))',
                "{{outcome}}",
            )
        ],
        unit="ops",
        stack=True,
        w=6,
        description="Outcome classes: 2xx, 3xx, 4xx, 5xx, timeout, error.",
    )
    lay.panel(
        "Delivery latency (event to delivered)",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f'(rate(wa_webhook_delivery_latency_seconds_bucket{{job="webhook-dispatcher"}}[{RI}])))',
                f"p{round(float(q) * 100)}",
            )
            for q in ("0.5", "0.99")
        ],
        unit="s",
        w=6,
    )
    lay.panel(
        "Outbox pending",
        [('sum(wa_webhook_outbox_pending{job="webhook-dispatcher"})', "pending")],
        w=6,
    )
    lay.panel(
        "Oldest pending age",
        [('max(wa_webhook_outbox_oldest_pending_age_seconds{job="webhook-dispatcher"})', "oldest")],
        unit="s",
        w=6,
    )

    lay.panel(
        "Deliveries finished by status",
        [
            (
                f'sum by (status) (rate(wa_webhook_deliveries_total{{job="webhook-dispatcher"}}[{RI}]))',
                "{{status}}",
            )
        ],
        unit="ops",
        w=12,
    )
    lay.panel(
        "Attempt duration p99",
        [
            (
                f"histogram_quantile(0.99, sum by (le) "
                f'(rate(wa_webhook_attempt_duration_seconds_bucket{{job="webhook-dispatcher"}}[{RI}])))',
                "p99",
            )
        ],
        unit="s",
        w=12,
    )

    lay.row("Stats")
    lay.panel(
        "Processing lag (event occurred -> counted)",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f'(rate(wa_stats_event_lag_seconds_bucket{{job="stats"}}[{RI}])))',
                f"p{round(float(q) * 100)}",
            )
            for q in ("0.5", "0.99")
        ],
        unit="s",
    )
    lay.panel(
        "Events processed by type",
        [(f'sum by (type) (rate(wa_stats_events_processed_total{{job="stats"}}[{RI}]))', "{{type}}")],
        unit="ops",
    )
    lay.panel(
        "API usage items not counted as sent",
        [
            (
                f'sum by (reason) (increase(wa_stats_api_usage_items_rejected_total{{job="stats"}}[{RI}]))',
                "{{reason}}",
            )
        ],
        description="Items of the gateways' usage batches with a bad user id or count (dropped), or "
        "a bad or another user's instance id (counted without the instance). Should stay at 0.",
    )

    return {
        "uid": "wa-overview",
        "title": "WhatsApp API — overview",
        "description": "Gateway RED, sessions and shards, bus, webhooks and stats "
        "(source: deploy/grafana/build_dashboard.py).",
        "tags": ["whatsapp", "wa"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": lay.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
