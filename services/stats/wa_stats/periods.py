"""Calendar-aligned UTC periods of the statistics queries.

- ``today``: from 00:00 UTC of the current day;
- ``week``: from Monday 00:00 UTC of the current ISO week;
- ``month``: from the 1st of the current month, 00:00 UTC;
- ``year``: from January 1st of the current year, 00:00 UTC;
- ``all``: no lower bound.

Counters are kept per UTC day, so a period is the set of days ``>= start`` (``None`` = all days).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from wa_common.bus.router import RequestError
from wa_common.schemas.stats import USER_PERIODS

ALL_PERIODS: tuple[str, ...] = USER_PERIODS  # every period a query may name


class InvalidPeriod(RequestError):
    """The period string is not one of the allowed values: the query answers 400."""

    def __init__(self, value: object, allowed: Sequence[str]) -> None:
        message = f"invalid period {value!r}: must be one of {', '.join(allowed)}"
        super().__init__(400, message, [{"field": "period", "message": message}])
        self.value = value
        self.allowed = tuple(allowed)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of an aware (or naive UTC) datetime."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def day_start(day: date) -> datetime:
    """00:00 UTC of ``day`` as an aware datetime."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def next_day_start(moment: datetime) -> datetime:
    """00:00 UTC of the day after ``moment``'s UTC day (when daily limits reset)."""
    return day_start(utc_day(moment) + timedelta(days=1))


def period_start(period: str, now: datetime, allowed: Sequence[str] = ALL_PERIODS) -> date | None:
    """First UTC day of ``period`` containing ``now``; ``None`` for ``all``.

    Raises :class:`InvalidPeriod` when ``period`` is not in ``allowed``.
    """
    if period not in allowed:
        raise InvalidPeriod(period, allowed)
    today = utc_day(now)
    if period == "today":
        return today
    if period == "week":
        return today - timedelta(days=today.weekday())
    if period == "month":
        return today.replace(day=1)
    if period == "year":
        return today.replace(month=1, day=1)
    return None
