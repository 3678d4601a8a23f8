"""The gateways' ``usage.api_calls`` batches, item by item.

A batch carries every user's API calls of one gateway interval, so one bad item never fails it:
each item is checked on its own and each refusal is counted in
``wa_stats_api_usage_items_rejected_total`` (one log line per batch, with counts only, never the
items' values):

- an item that is not an object (``malformed``), a ``userId`` that is not an id (``user_id``),
  or a ``count`` that is not an integer in 1..:data:`MAX_USAGE_COUNT` (``count``): the item is
  dropped (nobody to count it for, or no count);
- an ``instanceId`` that is not an id (``instance_id``, e.g. a NUL byte from
  ``GET /api/instances/%00/status``), or an instance stats knows to be another user's
  (``foreign_instance``): the calls are counted for the user without the instance, so a user's
  statistics never show an instance that is not theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from wa_common.ids import is_id
from wa_common.logs import get_logger
from wa_common.schemas import Event
from wa_common.schemas.events import ApiUsageBatch, ApiUsageCount
from wa_stats.metrics import USAGE_ITEMS_REJECTED
from wa_stats.periods import utc_day
from wa_stats.repository import InstanceInfo

log = get_logger(__name__)

# Most API calls one usage item may carry (one user and instance over one gateway interval);
# far above what a replica serves, far below the counters' 64-bit range.
MAX_USAGE_COUNT = 10_000_000


@dataclass(frozen=True)
class Screening:
    """A batch with its well-formed items only, and what was refused on the way (reported,
    once the batch is known not to be a duplicate, by :meth:`report`)."""

    batch: ApiUsageBatch
    refused: Counter[str]
    without_counts: bool = False
    bad_day: bool = False

    def report(self, event: Event) -> None:
        """Count the refused items in ``wa_stats_api_usage_items_rejected_total`` and log them."""
        if self.bad_day:
            log.warning(
                "usage.api_calls batch with an invalid day; counted on the event's day", event_id=event.id
            )
        if self.without_counts:
            USAGE_ITEMS_REJECTED.labels("malformed").inc()
            log.warning("usage.api_calls batch without a list of counts", event_id=event.id)
        else:
            _refuse(event, self.refused)


def screen(event: Event) -> Screening:
    """The batch in ``event`` with its well-formed items only (see the module docstring); the
    ``day`` of the event when the batch's is missing or not a date. Pure: nothing is counted or
    logged until :meth:`Screening.report`."""
    counts = event.data.get("counts")
    refused: Counter[str] = Counter()
    items: list[ApiUsageCount] = []
    if isinstance(counts, list):
        items = [item for item in (_item(raw, refused) for raw in counts) if item is not None]
    day, bad_day = _day(event)
    gateway = event.data.get("gateway")
    batch = ApiUsageBatch(
        gateway=gateway if isinstance(gateway, str) else "", day=day.isoformat(), counts=items
    )
    return Screening(batch, refused, without_counts=not isinstance(counts, list), bad_day=bad_day)


def screened(event: Event) -> ApiUsageBatch:
    """:func:`screen` and :meth:`Screening.report` at once: the batch's well-formed items."""
    screening = screen(event)
    screening.report(event)
    return screening.batch


def attributed(event: Event, batch: ApiUsageBatch, known: Mapping[str, InstanceInfo]) -> list[ApiUsageCount]:
    """``batch``'s items, each without its instance when ``known`` (the instances stats knows
    among those named) says the instance is another user's."""
    refused: Counter[str] = Counter()
    items = []
    for item in batch.counts:
        info = known.get(item.instance_id) if item.instance_id else None
        if info is not None and info.user_id and info.user_id != item.user_id:
            refused["foreign_instance"] += 1
            item = item.model_copy(update={"instance_id": None})
        items.append(item)
    _refuse(event, refused)
    return items


def _item(raw: Any, refused: Counter[str]) -> ApiUsageCount | None:
    if not isinstance(raw, dict):
        refused["malformed"] += 1
        return None
    user_id, instance_id, count = raw.get("userId"), raw.get("instanceId"), raw.get("count")
    if not is_id(user_id):
        refused["user_id"] += 1
        return None
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_USAGE_COUNT:
        refused["count"] += 1
        return None
    if instance_id is not None and instance_id != "" and not is_id(instance_id):
        refused["instance_id"] += 1
        instance_id = None
    return ApiUsageCount(user_id=str(user_id), instance_id=instance_id or None, count=count)


def _day(event: Event) -> tuple[date, bool]:
    """The batch's ``day``, or the UTC day of the event when it is missing (``False``) or not a
    date (``True``: worth a warning)."""
    raw = event.data.get("day")
    if not isinstance(raw, str):
        return utc_day(event.occurred_at), False
    try:
        return date.fromisoformat(raw), False
    except ValueError:
        return utc_day(event.occurred_at), True


def _refuse(event: Event, refused: Counter[str]) -> None:
    if not refused:
        return
    for reason, n in refused.items():
        USAGE_ITEMS_REJECTED.labels(reason).inc(n)
    log.warning("usage.api_calls items not counted as sent", event_id=event.id, **dict(refused))
