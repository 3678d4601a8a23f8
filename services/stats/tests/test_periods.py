"""Calendar-aligned UTC periods (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from wa_common.schemas.wire import iso_ms
from wa_stats.periods import InvalidPeriod, next_day_start, period_start


def test_periods_are_calendar_aligned_utc() -> None:
    now = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # a Friday
    assert period_start("today", now) == date(2026, 11, 20)
    assert period_start("week", now) == date(2026, 11, 16)  # Monday
    assert period_start("month", now) == date(2026, 11, 1)
    assert period_start("year", now) == date(2026, 1, 1)
    assert period_start("all", now) is None
    monday = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)
    assert period_start("week", monday) == date(2026, 11, 16)
    assert period_start("week", monday - timedelta(microseconds=1)) == date(2026, 11, 9)
    # A non-UTC clock value is converted first.
    plus3 = datetime(2026, 11, 21, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert period_start("today", plus3) == date(2026, 11, 20)
    assert next_day_start(now) == datetime(2026, 11, 21, tzinfo=UTC)
    assert iso_ms(datetime(2023, 1, 1, tzinfo=UTC)) == "2023-01-01T00:00:00.000Z"
    with pytest.raises(InvalidPeriod, match="must be one of week, month, year, all") as refused:
        period_start("today", now, ("week", "month", "year", "all"))
    assert refused.value.status == 400 and refused.value.details == [
        {"field": "period", "message": refused.value.message}
    ]
