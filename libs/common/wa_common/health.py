"""Liveness and readiness.

``/healthz`` answers 200 ``{"status": "alive", "pid": <int>}`` while the process runs its event
loop. ``/readyz`` runs every registered check (each bounded by a timeout) and answers 200
``{"status": "ready", "pid": <int>, "checks": {...}}`` only when all pass, else 503 with the
failing checks named, so an orchestrator stops routing to a replica whose RabbitMQ or database
is unreachable. ``pid`` tells which process answered (a supervisor or test harness checks that
the port it polls belongs to the process it started).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from starlette.responses import JSONResponse

from wa_common.logs import get_logger
from wa_common.metrics import metrics_response

Check = Callable[[], Awaitable[bool]]

log = get_logger(__name__)


class HealthChecks:
    """A named set of async readiness checks; a check returns ``True`` when healthy."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def run(self, timeout_s: float = 2.0) -> tuple[bool, dict[str, str]]:
        """Run all checks concurrently; returns (all passed, {name: "ok" | reason})."""

        async def one(name: str, check: Check) -> tuple[str, str]:
            try:
                ok = await asyncio.wait_for(check(), timeout_s)
            except TimeoutError:
                return name, f"timed out after {timeout_s}s"
            except Exception as exc:
                return name, f"error: {type(exc).__name__}: {exc}"
            return name, "ok" if ok else "failing"

        results = dict(await asyncio.gather(*(one(n, c) for n, c in self._checks.items())))
        return all(v == "ok" for v in results.values()), results


def health_router(checks: HealthChecks) -> APIRouter:
    """Router with ``/healthz``, ``/readyz`` and ``/metrics`` (excluded from the OpenAPI schema)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "alive", "pid": os.getpid()}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, results = await checks.run()
        if not ok:
            log.warning("not ready", checks=results)
        body = {"status": "ready" if ok else "not ready", "pid": os.getpid(), "checks": results}
        return JSONResponse(body, 200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> object:
        return metrics_response()

    return router
