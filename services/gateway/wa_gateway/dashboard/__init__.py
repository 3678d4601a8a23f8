"""The web dashboard: static files served by the gateway.

- ``GET /``: ``static/index.html`` (the single page; hash routes such as ``#/instances``);
- ``GET /dashboard/<path>``: the page's ES modules, stylesheet and images from ``static/``;
- ``GET /dashboard/config.json``: ``{"simulator": bool, "version": str}``, public (no secrets),
  so the page shows the simulator-only controls when ``/api/admin/sim/*`` exists.

The files are hand-written ES modules with no build step (README, "Dashboard"): what is in the
repository is what the browser runs. Everything the page does goes through the public REST API
and ``GET /api/events/stream`` with the user's JWT; the dashboard has no privileged back door.
Served with ``Cache-Control: no-cache`` (browsers revalidate with the ETag, so an upgrade is
picked up at once) and the strict ``Content-Security-Policy`` of ``wa_gateway.middleware``.
Disabled with ``GATEWAY_DASHBOARD=false``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from wa_common import __version__
from wa_gateway.settings import GatewaySettings

STATIC_DIR = Path(__file__).parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}


class _StaticFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_dashboard(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the dashboard's routes to ``app`` (after the API routes; see the module docstring)."""
    if not settings.dashboard:
        return
    simulator = settings.simulator_routes_enabled

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=NO_CACHE)

    @app.get("/dashboard/config.json", include_in_schema=False)
    async def config() -> JSONResponse:
        return JSONResponse(
            {"simulator": simulator, "version": __version__}, headers={"Cache-Control": "no-store"}
        )

    app.mount("/dashboard", _StaticFiles(directory=STATIC_DIR), name="dashboard")
