"""Alembic helpers: each service keeps its migrations in ``<package>/migrations``.

Migrations run as a pre-start step (``python -m wa_<service> migrate``, ``make migrate``, the
Kubernetes migration Job), never inside request handling (DESIGN.md, "Stores").
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from wa_common.db import async_url


def alembic_config(package: str, url: str) -> Config:
    """Alembic config for ``<package>/migrations`` against ``url``."""
    location = resources.files(package) / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", version_table(package))
    return cfg


def version_table(package: str) -> str:
    """Alembic's version table of ``package`` (``alembic_version_<service>``).

    One table per service, not Alembic's shared default ``alembic_version``: services whose
    stores share one database (a small deployment, the test suite) keep separate revisions.
    """
    return f"alembic_version_{package.removeprefix('wa_')}"


def upgrade(package: str, url: str, revision: str = "head") -> None:
    """Upgrade the store at ``url`` to ``revision`` with the migrations of ``package``."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(package, url), revision)


def run_env(context: Any, target_metadata: MetaData) -> None:
    """Body of a service's ``migrations/env.py``: run migrations online on the async driver."""
    url = context.config.get_main_option("sqlalchemy.url")

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=context.config.get_main_option("version_table") or "alembic_version",
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(async_url(url), poolclass=pool.NullPool, hide_parameters=True)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())
