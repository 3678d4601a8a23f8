"""Every service's migrations can share one database (separate Alembic version tables)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conftest import POSTGRES_URL
from wa_common.ids import new_id
from wa_common.migrations import upgrade, version_table

pytestmark = pytest.mark.integration

PACKAGES = ["wa_auth", "wa_session_worker", "wa_webhooks", "wa_stats"]


async def test_all_services_migrate_into_one_database() -> None:
    name = f"wa_test_mig_{new_id().lower()}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    url = f"{base}/{name}"
    try:
        for package in PACKAGES:
            await asyncio.to_thread(upgrade, package, url)
        await asyncio.to_thread(upgrade, "wa_auth", url)  # idempotent
        conn = await asyncpg.connect(url)
        try:
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        finally:
            await conn.close()
        for package in PACKAGES:
            assert version_table(package) in tables
        expected = {"users", "instances", "shard_leases", "webhook_deliveries", "stats_usage_daily"}
        assert expected <= tables
        assert "alembic_version" not in tables
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
