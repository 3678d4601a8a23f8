"""The provisioned Grafana dashboard: valid dashboard JSON, in sync with its generator, and every
metric it queries is exposed by a running service (or by RabbitMQ's Prometheus plugin)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Running
from tests.deploy.helpers import DEPLOY, exposed, promql_metrics
from tests.deploy.metrics_catalog import AWAITED, RABBITMQ

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wa.json"
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "table", "bargauge", "heatmap", "text"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def exprs() -> list[str]:
    return [t["expr"] for p in panels(load()) for t in p.get("targets", [])]


def queried() -> set[str]:
    return set().union(*(promql_metrics(e) for e in exprs()))


def test_dashboard_is_valid_dashboard_json() -> None:
    dash = load()
    for key in ("uid", "title", "panels", "schemaVersion", "templating", "time"):
        assert key in dash, f"dashboard has no {key!r}"
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    ds_vars = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert [v["query"] for v in ds_vars] == ["prometheus"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for p in panels(dash):
        assert p["type"] in PANEL_TYPES, p["type"]
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, (p["title"], pos)
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"] == p["datasource"]


def test_dashboard_covers_the_issue() -> None:
    """Issue 8's list: RED, sessions, shards, traffic, bus and queue depths, webhooks, outbox, stats."""
    names = queried()
    for needed in (
        "wa_http_requests_total",
        "wa_http_request_duration_seconds_bucket",
        "wa_sessions",
        "wa_shards_owned",
        "wa_bus_messages_published_total",
        "wa_bus_messages_consumed_total",
        "rabbitmq_queue_messages_ready",
        "wa_webhook_attempts_total",
        "wa_webhook_delivery_latency_seconds_bucket",
        "wa_webhook_outbox_pending",
        "wa_webhook_outbox_oldest_pending_age_seconds",
        "wa_stats_event_lag_seconds_bucket",
    ):
        assert needed in names, f"the dashboard does not show {needed}"
    text = " ".join(exprs())
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


def test_dashboard_matches_its_generator() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", DEPLOY / "grafana" / "build_dashboard.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), (
        "deploy/grafana/dashboards/wa.json is stale: run .venv/bin/python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every query (as the expression of a recording rule)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): PromQL syntax not checked")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/wa.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.integration
@pytest.mark.e2e
def test_every_dashboard_metric_is_exposed(running_services: Running) -> None:
    families = running_services.families()
    missing = sorted(
        m for m in queried() if not exposed(m, families) and m not in RABBITMQ and m not in AWAITED
    )
    assert not missing, f"the dashboard queries metrics that no service exposes: {missing}"


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.parametrize("metric", sorted(AWAITED))
def test_awaited_metric_is_exposed(metric: str, running_services: Running) -> None:
    if not exposed(metric, running_services.families()):
        pytest.xfail(f"{metric} not exposed yet ({AWAITED[metric]})")
