"""Fixtures of the session-worker tests: migrated stores (SQLite, PostgreSQL, MongoDB if set) and
the in-memory repository."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.memory import MemoryRepository
from wa_session_worker.repository.sql import SqlRepository
from wa_session_worker.settings import WorkerSettings

MONGODB_URL = os.environ.get("MONGODB_URL")


def migrate(url: str) -> None:
    """Upgrade the worker store at ``url`` (in a thread: Alembic runs its own event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, "wa_session_worker", url).result()


def in_process_settings(
    worker_id: str, amqp_url: str, database_url: str, shard_count: int, **overrides: object
) -> WorkerSettings:
    """Settings of a worker run inside the test process: embedded profile, any port, short
    leases (3 s) and simulator receipts after 20/40 ms; ``overrides`` add or replace fields."""
    values: dict[str, object] = dict(
        id=worker_id,
        profile="embedded",
        amqp_url=amqp_url,
        shard_count=shard_count,
        database_url=database_url,
        port=0,
        lease_ttl_s=3,
        lease_renew_s=0.5,
        lease_safety_s=1,
        sim_delivered_ms=20,
        sim_read_ms=40,
    )
    values.update(overrides)
    return WorkerSettings(**values)


@pytest.fixture(scope="session")
def worker_settings() -> Callable[..., WorkerSettings]:
    """:func:`in_process_settings`, for module fixtures (a tests folder is not importable)."""
    return in_process_settings


@pytest.fixture(scope="session")
def worker_pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated to the worker's newest schema."""
    migrate(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def worker_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("worker") / "worker.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mongodb", "memory"])
def repo_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The repository implementation of a contract leg, and its migrated SQL store's URL (SQL
    legs only: looked up here, in a plain fixture, so the memory leg needs no database)."""
    if request.param in ("sqlite", "postgresql"):
        fixture = "worker_sqlite_url" if request.param == "sqlite" else "worker_pg_url"
        return request.param, request.getfixturevalue(fixture)
    return request.param, None


@pytest.fixture
async def repo(repo_kind: tuple[str, str | None]) -> AsyncIterator[Repository]:
    """Every reachable repository implementation (MongoDB only when ``MONGODB_URL`` is set), and
    the in-memory one that fast tests of the service use in their place."""
    kind, url = repo_kind
    if kind == "memory":
        yield MemoryRepository()
        return
    if kind == "mongodb":
        if not MONGODB_URL:
            pytest.skip("MongoDB leg skipped: set MONGODB_URL=mongodb://host:27017 to run it")
        from wa_session_worker.repository.mongo import MongoRepository

        mongo = MongoRepository(MONGODB_URL, f"wa_test_{new_id().lower()}")
        await mongo.start()
        yield mongo
        await mongo.client.drop_database(mongo.db.name)
        await mongo.close()
        return
    assert url is not None
    engine = create_engine(url)
    yield SqlRepository(engine, url)
    await engine.dispose()
