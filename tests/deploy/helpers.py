"""Shared helpers of the deployment tests: settings env names, PromQL metric names, paths."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Settings class of every service, keyed by its Python module (imported at test time)."""
    from wa_auth.settings import AuthSettings
    from wa_gateway.settings import GatewaySettings
    from wa_session_worker.settings import WorkerSettings
    from wa_stats.settings import StatsSettings
    from wa_webhooks.settings import WebhooksSettings

    return {
        "wa_gateway": GatewaySettings,
        "wa_auth": AuthSettings,
        "wa_session_worker": WorkerSettings,
        "wa_webhooks": WebhooksSettings,
        "wa_stats": StatsSettings,
    }


# Image name (compose `image:`, Kubernetes container image before the tag) -> module.
IMAGE_MODULE = {
    "wa-gateway": "wa_gateway",
    "wa-auth": "wa_auth",
    "wa-session-worker": "wa_session_worker",
    "wa-webhooks": "wa_webhooks",
    "wa-stats": "wa_stats",
}
# Workspace package (Dockerfile PACKAGE build argument) -> module.
PACKAGE_MODULE = {name: module for name, module in IMAGE_MODULE.items()}


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Environment variable names ``cls`` reads (upper case; pydantic-settings ignores case).

    A field with a validation alias reads its alias(es); ``alias=`` likewise; any other field
    reads ``env_prefix + FIELD`` upper-cased.
    """
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif field.alias:
            names.add(field.alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![A-Za-z0-9_:.$])((?:wa|rabbitmq)_[A-Za-z0-9_]+)")
_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metrics(expr: str) -> set[str]:
    """Our metric names (``wa_*``, ``rabbitmq_*``) a PromQL expression selects.

    String literals (label values, regexes, label_replace arguments) are removed first, so only
    selector names remain.
    """
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def exposed(name: str, families: set[str]) -> bool:
    """True when metric ``name`` (as queried) belongs to one of the exposed ``families``.

    ``families`` holds every name seen in an exposition: sample names and # HELP/# TYPE names.
    A histogram is queried through ``_bucket``/``_sum``/``_count``; its family may have no
    series yet (labelled histograms appear after first use), so its # HELP name counts.
    """
    if name in families:
        return True
    return any(name.endswith(s) and name[: -len(s)] in families for s in _SUFFIXES)


def exposition_names(text: str) -> set[str]:
    """Every metric family and sample name in a Prometheus text exposition."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
