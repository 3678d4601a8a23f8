"""API usage metering: calls counted in memory per (UTC day, user, instance), published to stats
as one ``usage.api_calls`` event per interval (``GATEWAY_USAGE_FLUSH_S``, default 1 s) — never
one bus message per request.

A batch that cannot be published is merged back and retried at the next interval; counts still
unpublished at shutdown are flushed once more by the stop hook.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from wa_common.logs import get_logger
from wa_common.runtime import Runtime
from wa_common.schemas import Event, EventType, utcnow
from wa_common.schemas.events import ApiUsageBatch, ApiUsageCount

log = get_logger(__name__)

_Key = tuple[str, str, str | None]  # (day, user id, instance id)


class UsageMeter:
    def __init__(self, runtime: Runtime, gateway_id: str, interval_s: float) -> None:
        self._runtime = runtime
        self._gateway_id = gateway_id
        self._interval_s = interval_s
        self._counts: Counter[_Key] = Counter()

    def count(self, user_id: str, instance_id: str | None) -> None:
        """Count one API call of ``user_id`` (about ``instance_id`` when the route has one)."""
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
            by_day.setdefault(day, []).append(ApiUsageCount(userId=user_id, instanceId=instance_id, count=n))
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
