"""``wa_webhooks.models.EpochMs``: epoch milliseconds in the store, aware UTC in code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.dialects import postgresql

from wa_webhooks.models import EpochMs

DIALECT = postgresql.dialect()


def test_times_are_stored_as_epoch_milliseconds_and_read_as_aware_utc() -> None:
    column = EpochMs()
    at = datetime(2023, 1, 1, 12, 0, 0, 123999, tzinfo=UTC)
    ms = column.process_bind_param(at, DIALECT)
    assert ms == 1_672_574_400_123
    assert column.process_bind_param(at.replace(tzinfo=None), DIALECT) == ms, "naive is UTC"
    assert column.process_bind_param(at.astimezone(timezone(timedelta(hours=3))), DIALECT) == ms
    back = column.process_result_value(ms, DIALECT)
    assert back == at.replace(microsecond=123000) and back is not None and back.tzinfo is UTC
    assert column.process_bind_param(None, DIALECT) is None
    assert column.process_result_value(None, DIALECT) is None
