"""deploy/k8s: the kustomize base and the dev overlay render, every object validates against the
Kubernetes OpenAPI schemas offline (kubernetes-validate), and the workloads carry probes,
resources and labels; the worker set, PDB, HPA, Job, NetworkPolicy and ServiceMonitor are checked
for what DESIGN.md and issue 8 require."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy.helpers import DEPLOY, IMAGE_MODULE, env_names, settings_classes

K8S_VERSION = "1.30.0"
BASE = DEPLOY / "k8s" / "base"
DEV = DEPLOY / "k8s" / "overlays" / "dev"
TARGETS = {"base": BASE, "dev": DEV}
WORKLOADS = {"Deployment", "StatefulSet"}
CRD_GROUPS = ("monitoring.coreos.com/",)
SERVICES = {"gateway", "auth", "session-worker", "webhook-dispatcher", "stats"}
Obj = dict[str, Any]

_cache: dict[str, list[Obj]] = {}


def rendered(target: str) -> list[Obj]:
    if target not in _cache:
        _cache[target], _ = kustomize.render(TARGETS[target])
    return _cache[target]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def get(objs: list[Obj], kind: str, name: str) -> Obj:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod_spec(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def image_module(container: Obj) -> str:
    return IMAGE_MODULE[container["image"].rsplit("/", 1)[-1].split(":")[0].split("@")[0]]


# ---------------------------------------------------------------------------- rendering


def test_kustomize_version_supports_validation() -> None:
    assert K8S_VERSION in kubernetes_validate.utils.all_versions()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_renders(target: str) -> None:
    objs = rendered(target)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), "duplicate objects"
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    } <= kinds


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_subset_renderer_matches_real_kustomize(target: str) -> None:
    """The fallback renderer (used where no kustomize/kubectl exists) gives the real tool's output."""
    tool = kustomize.real_tool()
    if tool is None:
        pytest.skip(
            "neither kustomize nor kubectl on this machine: nothing to compare the subset renderer with"
        )

    def keyed(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}

    real = keyed(kustomize.render_real(TARGETS[target], tool))
    subset = keyed(kustomize.render_subset(TARGETS[target]))
    assert real.keys() == subset.keys()
    for key in real:
        assert subset[key] == real[key], f"{key} differs between {' '.join(tool)} and the subset renderer"


def test_subset_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\nnamePrefix: dev-\n")
    with pytest.raises(NotImplementedError):
        kustomize.render_subset(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n- target: {kind: ConfigMap, name: x}\n  patch: |-\n"
        "    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: x}\n    data: {a: c}\n"
    )
    with pytest.raises(NotImplementedError):
        kustomize.render_subset(tmp_path)


def test_subset_renderer_json_patch_and_images(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n"
        "  template:\n    spec:\n      containers:\n      - {name: c, image: 'wa-auth:1', args: [a]}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [d.yaml]\nnamespace: ns\nimages: [{name: wa-auth, newName: reg/wa-auth, newTag: '2'}]\n"
        "replicas: [{name: d, count: 1}]\npatches:\n- target: {kind: Deployment, name: d}\n  patch: |-\n"
        "    - {op: add, path: /spec/template/spec/containers/0/args/-, value: b}\n"
        "    - {op: add, path: /metadata/labels, value: {x~1y: z}}\n"
    )
    (obj,) = kustomize.render_subset(tmp_path)
    assert obj["metadata"] == {"name": "d", "namespace": "ns", "labels": {"x~1y": "z"}}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/wa-auth:2" and container["args"] == ["a", "b"]
    assert obj["spec"]["replicas"] == 1


# ---------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_objects_validate_against_kubernetes_schemas(target: str) -> None:
    failures = []
    for obj in rendered(target):
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)


def test_validation_catches_a_broken_object() -> None:
    """The schemas really bite (a typo'd field fails in strict mode)."""
    obj = yaml.safe_load(yaml.safe_dump(get(rendered("base"), "Deployment", "gateway")))
    pod_spec(obj)["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_custom_resources_are_well_formed(target: str) -> None:
    """ServiceMonitor/PrometheusRule (CRDs: no schema offline): a structural check instead."""
    objs = rendered(target)
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    (monitor,) = by_kind(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["jobLabel"] == "app.kubernetes.io/name"
    endpoint = spec["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"

    def selected(labels: dict[str, str]) -> bool:
        for expr in spec["selector"].get("matchExpressions", []):
            if expr["operator"] != "In" or labels.get(expr["key"]) not in expr["values"]:
                return False
        return all(labels.get(k) == v for k, v in spec["selector"].get("matchLabels", {}).items())

    scraped = {name for name, svc in services.items() if selected(svc["metadata"]["labels"])}
    assert scraped == SERVICES
    for name in scraped:
        assert any(p["name"] == "http" for p in services[name]["spec"]["ports"]), name
    (rule,) = by_kind(objs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert group["name"] and all(r["alert"] and r["expr"] for r in group["rules"])


# ---------------------------------------------------------------------------- workloads


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_container_has_probes_resources_and_labels(target: str) -> None:
    for obj in rendered(target):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "wa", f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name"), f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in WORKLOADS | {"Job"}:
            continue
        name = obj["metadata"]["name"]
        pod_labels = obj["spec"]["template"]["metadata"]["labels"]
        assert pod_labels.get("app.kubernetes.io/part-of") == "wa" and pod_labels.get(
            "app.kubernetes.io/name"
        )
        if obj["kind"] in WORKLOADS:
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels.items(), name
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in containers(obj):
            where = f"{name}/{c['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: resources.{kind}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            if obj["kind"] in WORKLOADS:
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
                port = c["livenessProbe"]["httpGet"]["port"]
                assert port in {p["name"] for p in c["ports"]}, where


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_container_env_names_exist_in_settings(target: str) -> None:
    """No drift between the manifests and the settings classes (read at test time)."""
    objs = rendered(target)
    classes = settings_classes()
    every = set().union(*(env_names(c) for c in classes.values()))
    configmaps = {c["metadata"]["name"]: c["data"] for c in by_kind(objs, "ConfigMap")}
    secrets: dict[str, dict[str, str]] = {
        s["metadata"]["name"]: s.get("stringData") or s.get("data") or {} for s in by_kind(objs, "Secret")
    }
    for obj in by_kind(objs, "Deployment") + by_kind(objs, "StatefulSet") + by_kind(objs, "Job"):
        for c in containers(obj):
            known = env_names(classes[image_module(c)])
            names = [e["name"] for e in c.get("env", [])]
            unknown = [n for n in names if n.upper() not in known]
            assert not unknown, f"{obj['metadata']['name']}/{c['name']}: {unknown} not read by its settings"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], f"{c['name']}: secret key {ref['key']} missing"
            for source in c.get("envFrom", []):
                data = configmaps[source["configMapRef"]["name"]]
                shared_unknown = [k for k in data if k.upper() not in every]
                assert not shared_unknown, f"ConfigMap keys read by no service: {shared_unknown}"
        if obj["kind"] in WORKLOADS:
            env = {e["name"]: e for c in containers(obj) for e in c.get("env", [])}
            assert "AMQP_URL" in env and "secretKeyRef" in env["AMQP_URL"]["valueFrom"]
    for data in configmaps.values():
        assert data.get("WA_PROFILE", "production") == "production"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_session_workers(target: str) -> None:
    objs = rendered(target)
    worker = get(objs, "StatefulSet", "session-worker")
    (c,) = pod_spec(worker)["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    shutdown = float(env["WORKER_SHUTDOWN_TIMEOUT_S"]["value"])
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= shutdown + 10, (
        "grace period to hand shards over"
    )
    assert worker["spec"]["replicas"] >= 2
    configmap = get(objs, "ConfigMap", "wa-config")["data"]
    assert int(configmap["WA_SHARDS"]) >= worker["spec"]["replicas"]
    pdbs = [
        p
        for p in by_kind(objs, "PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"].items() <= pod_spec_labels(worker).items()
    ]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1
    headless = get(objs, "Service", worker["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    rule = get(objs, "PrometheusRule", "wa")
    shard_rule = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "WaShardUnowned")
    assert shard_rule["expr"] == f"sum(wa_shards_owned) < {configmap['WA_SHARDS']}"


def pod_spec_labels(obj: Obj) -> dict[str, str]:
    return dict(obj["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_services_select_their_pods(target: str) -> None:
    objs = rendered(target)
    workloads = by_kind(objs, "Deployment") + by_kind(objs, "StatefulSet")
    for svc in by_kind(objs, "Service"):
        selector = svc["spec"]["selector"]
        matching = [w for w in workloads if selector.items() <= pod_spec_labels(w).items()]
        assert len(matching) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in pod_spec(matching[0])["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    assert {s["metadata"]["name"] for s in by_kind(objs, "Service")} == SERVICES


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_gateway_autoscales(target: str) -> None:
    objs = rendered(target)
    hpa = get(objs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_migration_job_runs_every_store_migration(target: str) -> None:
    job = get(rendered(target), "Job", "wa-migrate")
    mods = [image_module(c) for c in containers(job)]
    assert sorted(mods) == sorted(["wa_auth", "wa_session_worker", "wa_webhooks", "wa_stats"])
    assert all(c["args"] == ["migrate"] for c in containers(job))
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_dispatcher_egress_is_public_internet_only(target: str) -> None:
    objs = rendered(target)
    (policy,) = by_kind(objs, "NetworkPolicy")
    spec = policy["spec"]
    dispatcher = get(objs, "Deployment", "webhook-dispatcher")
    assert spec["podSelector"]["matchLabels"].items() <= pod_spec_labels(dispatcher).items()
    assert spec["policyTypes"] == ["Egress"]
    blocks = [peer["ipBlock"] for rule in spec["egress"] for peer in rule["to"] if "ipBlock" in peer]
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    v6 = next(b for b in blocks if b["cidr"] == "::/0")
    excluded = [ipaddress.ip_network(n) for n in v4["except"] + v6["except"]]

    def blocked(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in excluded)

    for internal in (
        "10.1.2.3",
        "172.20.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "100.64.0.1",
        "0.0.0.1",
        "fd00::1",
        "fe80::1",
        "::1",
        "::ffff:10.0.0.1",
    ):
        assert blocked(internal), f"egress to {internal} must be denied"
    for public in ("1.1.1.1", "8.8.8.8", "52.1.2.3", "2606:4700::1111"):
        assert not blocked(public), f"egress to {public} must be allowed"
    # In-cluster peers: DNS, RabbitMQ, PostgreSQL only, each restricted by port.
    in_cluster = [r for r in spec["egress"] if not any("ipBlock" in p for p in r["to"])]
    ports = sorted(p["port"] for r in in_cluster for p in r["ports"])
    assert ports == [53, 53, 5432, 5672]
    for rule in in_cluster:
        assert all("podSelector" in peer for peer in rule["to"])


def test_dev_overlay_differs_where_intended() -> None:
    base, dev = rendered("base"), rendered("dev")
    assert all(o["metadata"].get("namespace") == "wa-dev" for o in dev if o["kind"] != "Namespace")
    assert get(dev, "ConfigMap", "wa-config")["data"]["WA_ENGINE"] == "simulator"
    assert get(base, "ConfigMap", "wa-config")["data"]["WA_ENGINE"] == "neonize"
    images = {c["image"] for o in dev if o["kind"] in WORKLOADS | {"Job"} for c in containers(o)}
    assert images and all(i.endswith(":dev") for i in images)


def test_secret_is_a_template() -> None:
    secret = get(rendered("base"), "Secret", "wa-secrets")
    assert secret["metadata"]["annotations"]["wa.example.com/template"] == "true"
    for key, value in secret["stringData"].items():
        if key != "ADMIN_EMAIL":
            assert "CHANGE-ME" in value, f"wa-secrets {key} must be a placeholder"
