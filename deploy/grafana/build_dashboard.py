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


def _rate(metric: str, selector: str = "", fn: str = "rate") -> str:
    """``rate(metric{selector}[$__rate_interval])``, or another range function ``fn``."""
    return f"{fn}({metric}{{{selector}}}[{RI}])" if selector else f"{fn}({metric}[{RI}])"


def _legend(labels: str) -> str:
    """``"a, b"`` -> ``"{{a}} {{b}}"``."""
    return " ".join("{{" + label.strip() + "}}" for label in labels.split(","))


def _by(labels: str, expr: str) -> tuple[str, str]:
    """Target: ``sum by (labels) (expr)``, one series per value of ``labels``."""
    return f"sum by ({labels}) ({expr})", _legend(labels)


def _quantile(q: str, buckets: str, labels: str = "") -> tuple[str, str]:
    """Target: the ``q`` quantile of the histogram bucket rates ``buckets``, one series per value of
    ``labels`` (else one series, named after the quantile: ``p99``)."""
    by, legend = (f"le, {labels}", _legend(labels)) if labels else ("le", f"p{round(float(q) * 100)}")
    return f"histogram_quantile({q}, sum by ({by}) ({buckets}))", legend


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
    sw = 'job="session-worker"'
    wh = 'job="webhook-dispatcher"'
    st = 'job="stats"'
    mq = 'job="rabbitmq"'
    quantiles = ("0.5", "0.99")

    lay.row("Overview")
    lay.panel(
        "Targets up",
        [_by("job", 'up{job=~"gateway|auth|session-worker|webhook-dispatcher|stats|rabbitmq"}')],
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
    total = _rate("wa_http_requests_total", gw)
    errors = _rate("wa_http_requests_total", f'{gw},status=~"5.."')
    lay.panel("Request rate by route group", [_by("group", _group(total))], unit="reqps")
    lay.panel(
        "Error ratio (5xx) by route group",
        [(f"sum by (group) ({_group(errors)}) / sum by (group) ({_group(total)})", "{{group}}")],
        unit="percentunit",
    )
    lay.panel(
        "Client errors (4xx) by status",
        [_by("status", _rate("wa_http_requests_total", f'{gw},status=~"4.."'))],
        unit="reqps",
    )
    for q in quantiles:
        lay.panel(
            f"Latency p{round(float(q) * 100)} by route group",
            [_quantile(q, _group(_rate("wa_http_request_duration_seconds_bucket", gw)), "group")],
            unit="s",
            w=9,
        )
    lay.panel("Requests in flight", [_by("instance", f"wa_http_requests_in_flight{{{gw}}}")], w=6)

    lay.row("Sessions and shards")
    lay.panel("Sessions by status", [_by("status", f"wa_sessions{{{sw}}}")], stack=True)
    lay.panel("Sessions per worker", [_by("instance", f"wa_sessions{{{sw}}}")], stack=True)
    lay.panel(
        "Shards per worker",
        [_by("instance", f"wa_shards_owned{{{sw}}}"), (f"sum(wa_shards_owned{{{sw}}})", "total owned")],
        description="The total must equal WA_SHARDS; alert WaShardUnowned fires when it is lower.",
    )
    lay.panel(
        "Engine errors by operation",
        [_by("engine, operation", _rate("wa_engine_errors_total", sw))],
        unit="ops",
    )
    lay.panel(
        "Shard lease changes",
        [_by("change", _rate("wa_shard_lease_changes_total", sw, fn="increase"))],
        description="acquired / released / lost: steady state is flat; bursts when workers join or leave.",
    )
    lay.panel(
        "Simulator double connections",
        [(f"sum(increase(wa_sim_double_connections_total{{{sw}}}[1h]))", "last hour")],
        kind="stat",
        description="Must stay 0: a simulated account live on two workers at once (ownership violated).",
    )

    lay.row("Traffic")
    lay.panel(
        "Send rate (worker commands)",
        [_by("name, outcome", _rate("wa_worker_commands_total", f'{sw},name=~"message[.]send_.*"'))],
        unit="ops",
        description="message.send_text / message.send_media commands executed by the shard owners.",
    )
    lay.panel(
        "Inbound rate (events counted by stats)",
        [
            _by(
                "type",
                _rate("wa_stats_events_processed_total", f'{st},type=~"message_received|message_status"'),
            )
        ],
        unit="ops",
    )
    lay.panel(
        "Worker command p99 by name",
        [_quantile("0.99", _rate("wa_worker_command_duration_seconds_bucket", sw), "name")],
        unit="s",
    )
    lay.panel(
        "Where a send's time goes (p99 by phase)",
        [_quantile("0.99", _rate("wa_worker_send_phase_seconds_bucket", sw), "phase")],
        unit="s",
    )
    lay.panel(
        "Group commit: window size p50 by batcher",
        [_quantile("0.5", _rate("wa_batch_size_bucket"), "batcher")],
        w=6,
    )
    lay.panel(
        "Group commit: window flush p99 by batcher",
        [_quantile("0.99", _rate("wa_batch_flush_duration_seconds_bucket"), "batcher")],
        unit="s",
        w=6,
    )
    lay.panel(
        "Commands and queries by outcome",
        [_by("outcome", _rate("wa_worker_commands_total", sw))],
        unit="ops",
        w=12,
    )
    lay.panel(
        "Events published by workers (wa.events)",
        [
            _by(
                "instance",
                _rate("wa_bus_messages_published_total", f'{sw},exchange="wa.events",outcome="confirmed"'),
            )
        ],
        unit="ops",
        w=12,
    )

    lay.row("Event bus")
    lay.panel(
        "Published by exchange and outcome",
        [_by("exchange, outcome", _rate("wa_bus_messages_published_total"))],
        unit="ops",
    )
    lay.panel(
        "Consumed and nacked by queue",
        [
            (f"sum by (queue) ({_rate('wa_bus_messages_consumed_total')})", "consumed {{queue}}"),
            (
                f"sum by (queue, requeue) ({_rate('wa_bus_messages_nacked_total')})",
                "nacked {{queue}} requeue={{requeue}}",
            ),
        ],
        unit="ops",
    )
    lay.panel(
        "Handler p99 by queue",
        [_quantile("0.99", _rate("wa_bus_handler_duration_seconds_bucket"), "queue")],
        unit="s",
    )
    lay.panel(
        "Bus RPC by target and outcome",
        [_by("target, outcome", _rate("wa_rpc_requests_total"))],
        unit="reqps",
    )
    lay.panel(
        "Bus RPC p99 by target",
        [_quantile("0.99", _rate("wa_rpc_request_duration_seconds_bucket"), "target")],
        unit="s",
    )
    lay.panel(
        "Background task failures",
        [_by("job, task", _rate("wa_background_task_failures_total", fn="increase"))],
    )
    lay.panel(
        "Queue depth (ready), top 15",
        [(f"topk(15, sum by (queue) (rabbitmq_queue_messages_ready{{{mq}}}))", "{{queue}}")],
        description="From RabbitMQ's Prometheus plugin (/metrics/per-object).",
    )
    lay.panel(
        "Unacknowledged, top 15",
        [(f"topk(15, sum by (queue) (rabbitmq_queue_messages_unacked{{{mq}}}))", "{{queue}}")],
    )
    lay.panel(
        "Dead-letter queues",
        [_by("queue", f'rabbitmq_queue_messages{{{mq},queue=~".*\\\\.dead"}}')],
        description="Messages whose handler failed BUS_DELIVERY_LIMIT times (or rejected at once); "
        "inspect and replay or purge. Each queue keeps at most BUS_DEAD_LETTER_MAX_LENGTH messages and "
        "BUS_DEAD_LETTER_MAX_BYTES bytes, dropping its oldest first.",
    )
    lay.panel(
        "Dead letters dropped (dead-letter queue full)",
        [_by("queue", _rate("wa_bus_dead_letters_dropped_total", fn="increase"))],
        description="Oldest dead letters dropped from a full <queue>.dead, by queue family "
        "(wa.shard = every shard queue); counted by whichever service took the drop notice.",
    )
    lay.panel(
        "Broker message rates",
        [
            (f"sum({_rate(f'rabbitmq_global_messages_{what}_total', mq)})", what)
            for what in ("received", "routed", "delivered", "acknowledged")
        ],
        unit="ops",
    )
    lay.panel(
        "Broker connections, channels, consumers",
        [(f"sum(rabbitmq_{what}{{{mq}}})", what) for what in ("connections", "channels", "consumers")],
    )

    lay.row("Webhooks")
    lay.panel(
        "Attempts by outcome",
        [_by("outcome", _rate("wa_webhook_attempts_total", wh))],
        unit="ops",
        stack=True,
        w=6,
        description="Outcome classes: 2xx, 3xx, 4xx, 5xx, timeout, error.",
    )
    lay.panel(
        "Delivery latency (event to delivered)",
        [_quantile(q, _rate("wa_webhook_delivery_latency_seconds_bucket", wh)) for q in quantiles],
        unit="s",
        w=6,
    )
    lay.panel("Outbox pending", [(f"sum(wa_webhook_outbox_pending{{{wh}}})", "pending")], w=6)
    lay.panel(
        "Oldest pending age",
        [(f"max(wa_webhook_outbox_oldest_pending_age_seconds{{{wh}}})", "oldest")],
        unit="s",
        w=6,
    )

    lay.panel(
        "Deliveries finished by status",
        [_by("status", _rate("wa_webhook_deliveries_total", wh))],
        unit="ops",
        w=12,
    )
    lay.panel(
        "Attempt duration p99",
        [_quantile("0.99", _rate("wa_webhook_attempt_duration_seconds_bucket", wh))],
        unit="s",
        w=12,
    )

    lay.row("Stats")
    lay.panel(
        "Processing lag (event occurred -> counted)",
        [_quantile(q, _rate("wa_stats_event_lag_seconds_bucket", st)) for q in quantiles],
        unit="s",
    )
    lay.panel(
        "Events processed by type",
        [_by("type", _rate("wa_stats_events_processed_total", st))],
        unit="ops",
    )
    lay.panel(
        "API usage items not counted as sent",
        [_by("reason", _rate("wa_stats_api_usage_items_rejected_total", st, fn="increase"))],
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
