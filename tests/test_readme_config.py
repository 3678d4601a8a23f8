"""Every environment variable a settings class reads is documented in README.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from wa_auth.settings import AuthSettings
from wa_common.settings import StoreSettings
from wa_gateway.settings import GatewaySettings
from wa_session_worker.settings import WorkerSettings
from wa_stats.settings import StatsSettings
from wa_webhooks.settings import WebhooksSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMON = set(StoreSettings.model_fields)


def env_names(cls: type[BaseSettings]) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names: list[str] = []
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.extend(str(c) for c in alias.choices)
        elif isinstance(alias, str):
            names.append(alias)
        elif field_name in COMMON and field.validation_alias is None:
            names.append(f"<PREFIX>{field_name.upper()}")
        else:
            names.append(f"{prefix}{field_name}".upper())
    return names


@pytest.mark.parametrize(
    "cls", [GatewaySettings, AuthSettings, WorkerSettings, WebhooksSettings, StatsSettings]
)
def test_every_setting_is_documented(cls: type[BaseSettings]) -> None:
    missing = [n for n in env_names(cls) if f"`{n}`" not in README]
    assert not missing, f"README.md does not document {missing}"
