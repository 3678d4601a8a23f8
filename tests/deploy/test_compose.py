"""docker-compose.yml, .env.example and the Dockerfile, validated offline (no Docker engine here).

- docker-compose.yml validates against the Compose Specification JSON schema (vendored in
  tests/deploy/schemas, source noted there);
- every environment name a service gets exists in that service's settings class, read at test
  time (no drift between compose and code);
- every ${VAR} compose interpolates is documented in .env.example, which holds no real secret;
- the Dockerfile builds from the lock file, runs as non-root, has a health check, bakes no secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import DEPLOY, IMAGE_MODULE, PACKAGE_MODULE, ROOT, env_names, settings_classes

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
WA_SERVICES = {"gateway", "auth", "session-worker-1", "session-worker-2", "webhook-dispatcher", "stats"}
MIGRATIONS = {"auth-migrate", "worker-migrate", "webhooks-migrate", "stats-migrate"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def module_of(service: dict[str, Any]) -> str | None:
    image = str(service.get("image", "")).split(":")[0]
    return IMAGE_MODULE.get(image)


def test_compose_validates_against_the_compose_spec() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_catches_a_broken_file() -> None:
    """The vendored schema really constrains services (guards against an empty/permissive file)."""
    broken = compose()
    broken["services"]["gateway"]["depends_on"] = {"auth": {"condition": "when_it_feels_like_it"}}
    broken["services"]["gateway"]["restrat"] = "always"
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert len(errors) >= 2


def test_every_service_and_infrastructure_is_there() -> None:
    services = compose()["services"]
    assert WA_SERVICES | MIGRATIONS | {"rabbitmq", "postgres", "mongodb", "prometheus", "grafana"} <= set(
        services
    )
    plugins = (DEPLOY / "compose/rabbitmq/enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins
    for name, svc in services.items():
        if svc.get("build") or module_of(svc):
            assert module_of(svc), f"{name}: image must be one of {sorted(IMAGE_MODULE)}"


@pytest.mark.parametrize("name", sorted(WA_SERVICES | MIGRATIONS))
def test_environment_names_exist_in_settings(name: str) -> None:
    svc = compose()["services"][name]
    module = module_of(svc)
    assert module, name
    known = env_names(settings_classes()[module])
    unknown = sorted(k for k in environment(svc) if k.upper() not in known)
    assert not unknown, f"{name} ({module}) sets {unknown}, which its settings class does not read"


def test_production_profile_with_secrets_from_env() -> None:
    services = compose()["services"]
    for name in WA_SERVICES | MIGRATIONS:
        env = environment(services[name])
        assert env["WA_PROFILE"] == "production", name
        assert "${RABBITMQ_PASSWORD" in env["AMQP_URL"], name
        for key, value in env.items():
            if any(
                s in key
                for s in ("PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "DATABASE_URL", "MONGODB_URL")
            ):
                assert "${" in value, f"{name}: {key} must come from .env, not be written in compose"


def test_migrations_run_before_the_services() -> None:
    services = compose()["services"]
    for name in MIGRATIONS:
        assert services[name]["command"] == ["migrate"]
        assert services[name]["restart"] == "no"
    needs = {
        "auth": "auth-migrate",
        "session-worker-1": "worker-migrate",
        "session-worker-2": "worker-migrate",
        "webhook-dispatcher": "webhooks-migrate",
        "stats": "stats-migrate",
    }
    for name, migration in needs.items():
        dep = services[name]["depends_on"][migration]
        assert dep == {"condition": "service_completed_successfully"}, name
    # The gateway has no store; it waits for auth, which waits for its migration.
    assert services["gateway"]["depends_on"]["auth"] == {"condition": "service_healthy"}


def test_two_workers_with_distinct_ids_and_grace() -> None:
    services = compose()["services"]
    ids = {environment(services[n])["WORKER_ID"] for n in ("session-worker-1", "session-worker-2")}
    assert len(ids) == 2
    for n in ("session-worker-1", "session-worker-2"):
        assert services[n]["stop_grace_period"] == "45s"


def test_volumes_and_mounted_files_exist() -> None:
    doc = compose()
    for name in ("rabbitmq-data", "postgres-data", "mongodb-data", "prometheus-data", "grafana-data"):
        assert name in doc["volumes"]
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_every_interpolated_variable_is_in_env_example() -> None:
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].strip()
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    commented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in example.splitlines()
        if line.startswith("# ") and "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    missing = sorted(used - documented - commented)
    assert not missing, f".env.example does not document {missing}"


def test_env_example_holds_no_secret() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if any(s in key for s in ("PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY")):
            assert value == "" or "change" in value.lower(), f".env.example: {key} must be a placeholder"


# ---------------------------------------------------------------------------- Dockerfile


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_builds_from_the_lock_file() -> None:
    text = dockerfile()
    syncs = re.findall(r"uv sync [^\n]*", text)
    assert syncs and all("--frozen" in s and "--no-dev" in s and "--package" in s for s in syncs), syncs
    assert "COPY pyproject.toml uv.lock" in text
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    # Every workspace member's pyproject is copied before the first (dependencies-only) sync.
    for member in [
        "libs/common",
        *[str(p.parent.relative_to(ROOT)) for p in ROOT.glob("services/*/pyproject.toml")],
    ]:
        assert f"COPY {member}/pyproject.toml" in text, member


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    text = dockerfile()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD", text, re.M)
    assert (ROOT / "docker/healthcheck.py").exists()
    assert "STOPSIGNAL SIGTERM" in text


def test_dockerfile_bakes_no_secret() -> None:
    for line in dockerfile().splitlines():
        if line.startswith(("ENV", "ARG", "LABEL")) or (line.startswith("    ") and "=" in line):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|AMQP_URL|DATABASE_URL)", line), line
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".env", ".git", ".venv", "data", "*.pem"):
        assert pattern in ignored, f".dockerignore must exclude {pattern}"


def test_healthcheck_ports_match_settings() -> None:
    namespace: dict[str, Any] = {}
    exec(compile((ROOT / "docker/healthcheck.py").read_text(), "healthcheck.py", "exec"), namespace)
    ports = namespace["PORTS"]
    classes = settings_classes()
    assert set(ports) == set(classes)
    for module, (var, default) in ports.items():
        cls = classes[module]
        assert var in env_names(cls), (module, var)
        assert cls.model_fields["port"].default == default, module


def test_compose_build_args_name_real_packages() -> None:
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if not build:
            continue
        args = build["args"]
        assert PACKAGE_MODULE[args["PACKAGE"]] == args["MODULE"], name
        assert module_of(svc) == args["MODULE"], name
        pkg_dir = {
            "wa-gateway": "gateway",
            "wa-auth": "auth",
            "wa-session-worker": "session-worker",
            "wa-webhooks": "webhook-dispatcher",
            "wa-stats": "stats",
        }[args["PACKAGE"]]
        pyproject = (ROOT / "services" / pkg_dir / "pyproject.toml").read_text()
        assert f'name = "{args["PACKAGE"]}"' in pyproject
