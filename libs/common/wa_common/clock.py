"""One time convention: aware UTC ``datetime`` in code, read from an injectable clock.

A clock is any ``Callable[[], datetime]`` returning aware UTC (:data:`Clock`); :func:`utcnow` is
the machine's. Services take a clock where they read the time, so tests move time without
sleeping (:class:`ManualClock`). Conversions to a store's representation (naive UTC columns,
epoch milliseconds) happen in repositories only, with the helpers below; the wire format is
:data:`wa_common.schemas.wire.UtcDateTime`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The machine's current time, aware UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (tests); starts at ``start`` (aware UTC)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (may be fractional); returns the new time."""
        self._now += timedelta(seconds=seconds)
        return self._now


def from_unix(seconds: float) -> datetime:
    """Unix seconds (WhatsApp's timestamps) → aware UTC."""
    return datetime.fromtimestamp(seconds, UTC)


def from_unix_ms(ms: int) -> datetime:
    """Unix milliseconds (stores that keep integers) → aware UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_unix_ms(at: datetime) -> int:
    """Aware ``at`` → Unix milliseconds (stores that keep integers)."""
    return int(at.timestamp() * 1000)


def naive_utc(at: datetime) -> datetime:
    """Aware ``at`` → naive UTC (columns declared without a time zone)."""
    return at.astimezone(UTC).replace(tzinfo=None)
