"""Usage limits, as the stats service decides them: who is blocked for which limit until when.

Stats publishes ``limit_exceeded`` events (routing key ``limit_exceeded.<instance>``) with
``user_id`` on the envelope, the exceeded limit in ``meta.limit`` (or the reference's
``data.exceededLimits``) and the end of the period in ``meta.resetsAt`` (ISO 8601). The gateway
keeps these in memory (a transient queue per replica, bound to ``limit_exceeded.#``) and, at
start, asks stats for the blocks currently in force, so the check costs no request per call:

- ``maxApiCalls`` refuses every API call of the user,
- ``maxMessagesSent`` refuses sends (``/send``, ``/send-media``, ``/send-file``),

each with 429, a message naming the limit and when it resets, and ``Retry-After`` until
``resetsAt`` (both are per UTC day). ``maxInstances`` refuses ``POST /api/instances`` with 429
too, but it is not periodic: it holds while the user owns that many instances at once, so its
message says so (and what lifts it: deleting an instance, or an administrator raising the
limit) and it carries **no** ``Retry-After`` (no time would be true). Stats sends no
``resetsAt`` for it; the book keeps such a block for :data:`DEFAULT_BLOCK` at most (the create
route asks stats again before every create anyway, ``service.refresh_instance_quota``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
BINDING = (EXCHANGE_EVENTS, f"{EventType.LIMIT_EXCEEDED}.#")
# Limits that hold while a count stays at its maximum, not until a period ends.
NOT_PERIODIC = frozenset({MAX_INSTANCES})
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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Block:
    """One limit in force: until when the book keeps it, and the maximum when stats said it."""

    until: datetime
    maximum: int | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def limit_error(limit: str, block: Block) -> ApiError:
    """The 429 for ``limit``: a daily limit says when it resets (and ``Retry-After``); a count
    limit (``maxInstances``) says what it is and what lifts it, with no ``Retry-After``."""
    if limit in NOT_PERIODIC:
        count = _plural(block.maximum, "instance") if block.maximum is not None else "instances"
        what = f"{count} at once"
        return ApiError(
            429,
            f"Usage limit exceeded: {limit} ({what}) reached; "
            "delete an instance or ask an administrator to raise the limit",
        )
    wait = max(1, int((block.until - utcnow()).total_seconds()) + 1)
    return ApiError(
        429,
        f"Usage limit exceeded: {limit} reached for this period; "
        f"resets at {block.until.isoformat().replace('+00:00', 'Z')}",
        headers={"Retry-After": str(wait)},
    )


class LimitBook:
    """In-memory ``{user id: {limit name: Block}}``."""

    def __init__(self) -> None:
        self._blocks: dict[str, dict[str, Block]] = {}

    def block(self, user_id: str, limit: str, resets_at: datetime, maximum: int | None = None) -> None:
        self._blocks.setdefault(user_id, {})[limit] = Block(resets_at, maximum)

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
            until = _parse_time(entry.get("resetsAt")) or utcnow() + DEFAULT_BLOCK
            self.block(user_id, name, until, _int(entry.get("max")))

    def current(self, user_id: str, limit: str) -> Block | None:
        """``user_id``'s block for ``limit`` if one is in force (a lapsed one is dropped)."""
        found = self._blocks.get(user_id, {}).get(limit)
        if found is None:
            return None
        if found.until <= utcnow():
            self.clear(user_id, limit)
            return None
        return found

    def check(self, user_id: str, *limits: str) -> None:
        """Raise a 429 :class:`ApiError` if ``user_id`` is blocked for any of ``limits``."""
        for limit in limits:
            found = self.current(user_id, limit)
            if found is not None:
                raise limit_error(limit, found)

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
        maximum = _int(event.meta.get("max"))  # of meta.limit only
        for limit in dict.fromkeys(limits):
            self.block(str(user_id), limit, resets_at, maximum if limit == event.meta.get("limit") else None)

    def load(self, entries: list[dict[str, Any]]) -> int:
        """Replace the book with ``[{userId, limit, resetsAt}, ...]`` (from stats); returns count."""
        self._blocks.clear()
        n = 0
        for entry in entries:
            user_id, limit = entry.get("userId"), entry.get("limit")
            resets_at = _parse_time(entry.get("resetsAt")) or utcnow() + DEFAULT_BLOCK
            if user_id and limit:
                self.block(str(user_id), str(limit), resets_at, _int(entry.get("max")))
                n += 1
        return n

    async def on_delivery(self, delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except Exception:
            log.warning("malformed limit_exceeded event ignored")
            return
        self.apply_event(event)
