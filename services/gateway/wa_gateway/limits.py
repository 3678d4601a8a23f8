"""Usage limits, as the stats service decides them: who is blocked for which limit until when.

Stats publishes ``limit_exceeded`` events (routing key ``limit_exceeded.<instance>``) with
``user_id`` on the envelope, the exceeded limit in ``meta.limit`` (or the reference's
``data.exceededLimits``) and the end of the period in ``meta.resetsAt`` (ISO 8601). The gateway
keeps these in memory (a transient queue per replica, bound to ``limit_exceeded.#``) and, at
start, asks stats for the blocks currently in force, so the check costs no request per call:

- ``maxApiCalls`` refuses every API call of the user,
- ``maxMessagesSent`` refuses sends (``/send``, ``/send-media``, ``/send-file``),
- ``maxInstances`` refuses ``POST /api/instances``,

each with 429, a message naming the limit and ``Retry-After`` until ``resetsAt``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from wa_common.bus import Delivery
from wa_common.bus.topology import EXCHANGE_EVENTS
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType, utcnow
from wa_gateway.errors import ApiError

log = get_logger(__name__)

MAX_API_CALLS = "maxApiCalls"
MAX_MESSAGES_SENT = "maxMessagesSent"
MAX_INSTANCES = "maxInstances"
KNOWN_LIMITS = (MAX_API_CALLS, MAX_MESSAGES_SENT, MAX_INSTANCES)
BINDING = (EXCHANGE_EVENTS, f"{EventType.LIMIT_EXCEEDED}.#")
DEFAULT_BLOCK = timedelta(hours=1)


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, int | float):
            ts = value / 1000 if value > 10**11 else value
            return datetime.fromtimestamp(ts).astimezone()
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.astimezone()
    except (ValueError, OverflowError, OSError):
        return None


class LimitBook:
    """In-memory ``{user id: {limit name: resets at}}``."""

    def __init__(self) -> None:
        self._blocks: dict[str, dict[str, datetime]] = {}

    def block(self, user_id: str, limit: str, resets_at: datetime) -> None:
        self._blocks.setdefault(user_id, {})[limit] = resets_at

    def clear(self, user_id: str, limit: str | None = None) -> None:
        """Lift one block (or all of ``user_id``'s), e.g. after an admin changed the limits."""
        if limit is None:
            self._blocks.pop(user_id, None)
        else:
            self._blocks.get(user_id, {}).pop(limit, None)

    def replace_user(self, user_id: str, entries: list[dict[str, Any]], limit: str | None = None) -> None:
        """Replace ``user_id``'s blocks (or only those of ``limit``) with ``entries`` from stats
        (``[{userId, limit, resetsAt}]``; ``resetsAt`` null = until stats says otherwise)."""
        self.clear(user_id, limit)
        for entry in entries:
            name = entry.get("limit")
            if not isinstance(name, str) or (limit is not None and name != limit):
                continue
            self.block(user_id, name, _parse_time(entry.get("resetsAt")) or utcnow() + DEFAULT_BLOCK)

    def blocked_until(self, user_id: str, limit: str) -> datetime | None:
        until = self._blocks.get(user_id, {}).get(limit)
        if until is None:
            return None
        if until <= utcnow():
            self.clear(user_id, limit)
            return None
        return until

    def check(self, user_id: str, *limits: str) -> None:
        """Raise a 429 :class:`ApiError` if ``user_id`` is blocked for any of ``limits``."""
        for limit in limits:
            until = self.blocked_until(user_id, limit)
            if until is not None:
                wait = max(1, int((until - utcnow()).total_seconds()) + 1)
                raise ApiError(
                    429,
                    f"Usage limit exceeded: {limit} reached for this period; "
                    f"resets at {until.isoformat().replace('+00:00', 'Z')}",
                    headers={"Retry-After": str(wait)},
                )

    def apply_event(self, event: Event) -> None:
        """Record the blocks a ``limit_exceeded`` event announces."""
        user_id = event.user_id or event.meta.get("userId")
        if not user_id:
            return
        limits: list[str] = []
        if isinstance(event.meta.get("limit"), str):
            limits.append(event.meta["limit"])
        limits.extend(x for x in event.data.get("exceededLimits") or [] if isinstance(x, str))
        resets_at = _parse_time(event.meta.get("resetsAt")) or utcnow() + DEFAULT_BLOCK
        for limit in dict.fromkeys(limits):
            self.block(str(user_id), limit, resets_at)

    def load(self, entries: list[dict[str, Any]]) -> int:
        """Replace the book with ``[{userId, limit, resetsAt}, ...]`` (from stats); returns count."""
        self._blocks.clear()
        n = 0
        for entry in entries:
            user_id, limit = entry.get("userId"), entry.get("limit")
            resets_at = _parse_time(entry.get("resetsAt")) or utcnow() + DEFAULT_BLOCK
            if user_id and limit:
                self.block(str(user_id), str(limit), resets_at)
                n += 1
        return n

    async def on_delivery(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except Exception:
            log.warning("malformed limit_exceeded event ignored")
            return
        self.apply_event(event)
