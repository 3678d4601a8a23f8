"""API usage metering: calls counted in memory per (UTC day, user, instance), published to stats
as one ``usage.api_calls`` event per interval (``GATEWAY_USAGE_FLUSH_S``, default 1 s) — never
one bus message per request.

Which calls count: every call of an authenticated caller to an API route that ``maxApiCalls``
admits (``state.api_caller``/``admin_caller`` mark it with :func:`mark_metered`), whatever its
answer — 404s included, so probing other users' ids cannot escape ``maxApiCalls``. The call is
attributed to the path's ``instanceId`` only when the answer is a success (2xx/3xx): only then
has the instance's owner (the session worker, stats or the dispatcher) confirmed that the
instance is the caller's. Everything else counts for the caller without an instance. The
attribution happens in :class:`MeteringMiddleware` when the response starts.

A batch that cannot be published is merged back and retried at the next interval; counts still
unpublished at shutdown are flushed once more by the stop hook.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wa_common.ids import is_id
from wa_common.logs import get_logger
from wa_common.runtime import Runtime
from wa_common.schemas import Event, EventType, utcnow
from wa_common.schemas.events import ApiUsageBatch, ApiUsageCount

log = get_logger(__name__)

_Key = tuple[str, str, str | None]  # (day, user id, instance id)
_STATE_KEY = "metered_user"


def mark_metered(request: Request, user_id: str) -> None:
    """Count this request of ``user_id`` once its status is known (:class:`MeteringMiddleware`)."""
    setattr(request.state, _STATE_KEY, user_id)


class MeteringMiddleware:
    """Pure ASGI: counts a marked request when its response starts (or, if the app raised before
    answering, as a failure without an instance)."""

    def __init__(self, app: ASGIApp, meter: UsageMeter) -> None:
        self.app = app
        self.meter = meter

    def _count(self, scope: Scope, status: int) -> None:
        user_id = (scope.get("state") or {}).get(_STATE_KEY)
        if not isinstance(user_id, str):
            return
        instance_id = (scope.get("path_params") or {}).get("instanceId")
        ok = 200 <= status < 400 and is_id(instance_id)
        self.meter.count(user_id, instance_id if ok else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        async def send_wrapper(message: Message) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                self._count(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not counted:
                self._count(scope, 500)


class UsageMeter:
    def __init__(self, runtime: Runtime, gateway_id: str, interval_s: float) -> None:
        self._runtime = runtime
        self._gateway_id = gateway_id
        self._interval_s = interval_s
        self._counts: Counter[_Key] = Counter()

    def count(self, user_id: str, instance_id: str | None) -> None:
        """Count one API call of ``user_id`` (about ``instance_id`` when the caller was authorised
        for it)."""
        self._counts[(utcnow().date().isoformat(), user_id, instance_id)] += 1

    @property
    def pending(self) -> int:
        return sum(self._counts.values())

    async def flush(self) -> int:
        """Publish what was counted so far (one event per UTC day); returns calls published."""
        if not self._counts or self._runtime.bus is None:
            return 0
        taken, self._counts = self._counts, Counter()
        by_day: dict[str, list[ApiUsageCount]] = {}
        for (day, user_id, instance_id), n in taken.items():
            count = ApiUsageCount(user_id=user_id, instance_id=instance_id, count=n)
            by_day.setdefault(day, []).append(count)
        published = 0
        for day, counts in by_day.items():
            batch = ApiUsageBatch(gateway=self._gateway_id, day=day, counts=counts)
            try:
                await self._runtime.bus.publish_event(Event(type=EventType.API_USAGE, data=batch.dump()))
            except Exception as exc:
                log.warning("usage batch not published; retrying next interval", error=str(exc))
                for c in counts:
                    self._counts[(day, c.user_id, c.instance_id)] += c.count
                continue
            published += sum(c.count for c in counts)
        return published

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()
