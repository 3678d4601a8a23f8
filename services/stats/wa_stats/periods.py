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

ALL_PERIODS: tuple[str, ...] = ("today", "week", "month", "year", "all")


class InvalidPeriod(ValueError):
    """The period string is not one of the allowed values (the query answers 400)."""

    def __init__(self, value: object, allowed: Sequence[str]) -> None:
        super().__init__(f"invalid period {value!r}: must be one of {', '.join(allowed)}")
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


def iso_utc(moment: datetime) -> str:
    """``2023-01-01T00:00:00.000Z`` (milliseconds, ``Z``), the reference's timestamp format."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
