"""Entry point: ``python -m wa_auth [serve|migrate]``."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from wa_auth.api.errors import install_error_handlers
from wa_auth.api.routes import router
from wa_auth.crypto import ApiKeyVault, TokenSigner
from wa_auth.service import AuthService
from wa_auth.settings import AuthSettings
from wa_common.cli import run_cli
from wa_common.db import create_engine, ping, session_factory
from wa_common.migrations import upgrade
from wa_common.runtime import Runtime, create_app, serve

SERVICE = "auth"


def build_app(settings: AuthSettings | None = None) -> FastAPI:
    """The auth service as an ASGI app (started and stopped by its lifespan).

    At start it seeds the administrator (``ADMIN_*``) into an empty store and warns while that
    account still has the shipped default password. SQLAlchemy's engine never logs statements,
    whatever ``LOG_LEVEL`` (their parameters are password hashes and sealed API keys).
    """
    settings = settings or AuthSettings()
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    runtime = Runtime(SERVICE, settings)
    app = create_app(runtime, title="Auth service (internal)")
    install_error_handlers(app)

    engine = create_engine(settings.database_url)
    app.state.engine = engine
    service = AuthService(
        settings,
        session_factory(engine),
        runtime.bus,
        TokenSigner.from_settings(settings),
        ApiKeyVault.from_settings(settings),
    )
    app.state.auth_service = service
    app.state.internal_token = settings.internal_token
    app.include_router(router)

    async def database_ready() -> bool:
        return await ping(engine)

    runtime.health.add("database", database_ready)
    runtime.on_start(service.seed_admin)

    @runtime.on_start
    async def start_pruning() -> None:
        runtime.tasks.spawn(service.throttle.run_pruning(), name="auth-throttle-pruning")

    runtime.on_stop(engine.dispose)
    return app


def main() -> None:
    settings = AuthSettings()
    run_cli(
        SERVICE,
        serve=lambda: serve(build_app(settings), settings, service=SERVICE),
        migrate=lambda: upgrade("wa_auth", settings.database_url),
    )
