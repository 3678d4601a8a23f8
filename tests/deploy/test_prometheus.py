"""Prometheus: scrape config and alert rules are valid, cover what issue 8 asks, and query only
metrics that running services (or RabbitMQ's plugin) expose."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Running
from tests.deploy.helpers import DEPLOY, ROOT, exposed, promql_metrics
from tests.deploy.metrics_catalog import AWAITED, RABBITMQ

RULES = DEPLOY / "prometheus" / "rules.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
SEVERITIES = {"critical", "warning", "info"}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_rules_structure() -> None:
    """Always runs (no promtool needed): the rule-file shape Prometheus expects."""
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    alerts = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
            if "for" in rule:
                assert str(rule["for"])[-1] in "smh"
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"


def test_rules_cover_the_issue() -> None:
    by_name = {r["alert"]: r["expr"] for r in rules()}
    assert "sum(wa_shards_owned) <" in by_name["WaShardUnowned"]  # no worker owns some shard k
    assert "wa_webhook_outbox_pending" in by_name["WaWebhookOutboxGrowing"]
    assert "wa_webhook_outbox_oldest_pending_age_seconds" in by_name["WaWebhookOldestPendingTooOld"]
    assert 'status=~"5.."' in by_name["WaHttpErrorRateHigh"]
    assert "== 0" in by_name["WaServiceDown"] and by_name["WaServiceDown"].startswith("up{")


def test_shard_alert_matches_wa_shards() -> None:
    """The constant S in WaShardUnowned is the WA_SHARDS of the deployments."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shards = compose["x-common-env"]["WA_SHARDS"]
    assert shards == "${WA_SHARDS:-64}"
    configmap = yaml.safe_load((DEPLOY / "k8s/base/configmap.yaml").read_text())
    assert configmap["data"]["WA_SHARDS"] == "64"
    assert {r["alert"]: r["expr"] for r in rules()}["WaShardUnowned"] == "sum(wa_shards_owned) < 64"


def test_promtool_check_rules_and_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): only the structure check ran")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The config names the rule file by its container path; check it next to a copy of the rules.
    config = CONFIG.read_text().replace("/etc/prometheus/rules.yml", "rules.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_covers_every_service() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    targets = {t for j in jobs.values() for sc in j["static_configs"] for t in sc["targets"]}
    for name, svc in compose.items():
        image = str(svc.get("image", "")).split(":")[0]
        if image.startswith("wa-") and svc.get("command") != ["migrate"]:
            port = {"wa-gateway": 8080, "wa-auth": 8081, "wa-stats": 8082, "wa-webhooks": 8083}.get(
                image, 8084
            )
            assert f"{name}:{port}" in targets, f"Prometheus does not scrape compose service {name}"
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    assert {"gateway", "auth", "session-worker", "webhook-dispatcher", "stats"} <= set(jobs)


def test_k8s_prometheus_rule_equals_rules_file() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s/base/monitoring.yaml").read_text()))
    (rule,) = [d for d in docs if d and d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), (
        "deploy/k8s/base/monitoring.yaml's PrometheusRule differs from deploy/prometheus/rules.yml"
    )


@pytest.mark.integration
@pytest.mark.e2e
def test_rules_query_exposed_metrics(running_services: Running) -> None:
    families = running_services.families()
    queried = set().union(*(promql_metrics(r["expr"]) for r in rules()))
    assert queried, "no metric found in the rules"
    missing = sorted(
        m for m in queried if not exposed(m, families) and m not in RABBITMQ and m not in AWAITED
    )
    assert not missing, f"alert rules query metrics that no service exposes: {missing}"
