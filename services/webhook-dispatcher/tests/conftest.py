"""Fixtures of the dispatcher tests: an in-process dispatcher on the real RabbitMQ/PostgreSQL,
a test-side bus client and helpers to play the session worker
(``tests/support/dispatcher.py``), a module's own migrated store. Receivers: the root fixture
``http_servers``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from conftest import VhostFactory
from tests.support.dispatcher import Stack, make_settings, start_stack, stop_stack
from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_webhooks.repository import Repository


@pytest.fixture(scope="session")
def amqp_url(vhost_factory: VhostFactory) -> str:
    """A vhost of the dispatcher tests' own, or ``WA_TEST_AMQP_URL`` when set.

    Not the session's shared vhost: there ``wa.events.webhooks`` collects every event every
    other test publishes (the topology is declared by each connection), and a dispatcher started
    later must first work through that backlog (the kill -9 test timed out behind thousands of
    the session worker tests' events). The escape hatch is for a broker whose vhost creation
    hangs: point it at an existing, otherwise unused vhost.
    """
    override = os.environ.get("WA_TEST_AMQP_URL")
    if override:
        return override
    host = os.environ.get("TEST_AMQP_HOST", "127.0.0.1:5672")
    return f"amqp://guest:guest@{host}/{vhost_factory()}"


@pytest.fixture(scope="module")
async def stack(amqp_url: str, postgres_url: str) -> AsyncIterator[Stack]:
    runtime, s = await start_stack(make_settings(amqp_url, postgres_url))
    yield s
    await stop_stack(runtime, s)


@pytest.fixture(scope="module")
async def fresh_db(postgres_url: str) -> AsyncIterator[str]:
    """URL of a PostgreSQL database of this module alone (dropped at the end)."""
    name = f"wa_test_{new_id().lower()}"
    base, _, _ = postgres_url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield f"{base}/{name}"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="module")
async def repo(fresh_db: str) -> AsyncIterator[Repository]:
    """The webhooks store on this module's own database, migrated (no dispatcher running)."""
    await asyncio.to_thread(upgrade, "wa_webhooks", fresh_db)
    engine = create_engine(fresh_db)
    yield Repository(engine)
    await engine.dispose()
