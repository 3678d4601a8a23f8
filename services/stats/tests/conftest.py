"""Fixtures of the stats tests (helpers: ``support.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import AMQP_HOST, VhostFactory
from services.stats.tests.support import Local, Publisher, Running
from wa_common.bus import Bus, RpcClient
from wa_common.clock import ManualClock
from wa_common.db import create_engine
from wa_common.migrations import upgrade
from wa_stats.consumers import stats_router
from wa_stats.main import build_app
from wa_stats.repository import StatsRepository
from wa_stats.service import StatsService
from wa_stats.settings import StatsSettings


@pytest.fixture(scope="session")
def amqp_url(vhost_factory: VhostFactory) -> str:
    """A vhost of the stats tests' own: ``wa.events.stats`` must hold only the events these tests
    publish (in the session's shared vhost it also collects every other test's events, which a
    stats process started later would count)."""
    return f"amqp://guest:guest@{AMQP_HOST}/{vhost_factory()}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def local(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> AsyncIterator[Local]:
    """The service on a store upgraded to the newest schema, its clock at Friday 2030-03-15 10:00 UTC."""
    url = f"sqlite:///{tmp_path}/stats.db" if request.param == "sqlite" else postgres_url
    await asyncio.to_thread(upgrade, "wa_stats", url)
    engine = create_engine(url)
    bus = Publisher()
    clock = ManualClock(datetime(2030, 3, 15, 10, 0, tzinfo=UTC))
    service = StatsService(StatsRepository(engine), bus, now=clock)
    yield Local(service, stats_router(service.queries), clock, bus)
    await engine.dispose()


@pytest.fixture
async def stats(amqp_url: str, postgres_url: str) -> AsyncIterator[Running]:
    """``build_app`` started in this process on PostgreSQL, and a client bus to talk to it."""
    await asyncio.to_thread(upgrade, "wa_stats", postgres_url)
    settings = StatsSettings(profile="embedded", amqp_url=amqp_url, database_url=postgres_url, port=0)
    app = build_app(settings)
    runtime = app.state.runtime
    await runtime.start()
    bus = Bus(amqp_url, service="stats-test-client", publish_timeout_s=30)
    await bus.connect(declare=False)
    rpc = RpcClient(bus)
    await rpc.start()
    try:
        yield Running(app.state.stats, bus, rpc)
    finally:
        await bus.close(timeout_s=2)
        await runtime.stop()
