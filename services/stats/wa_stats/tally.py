"""The counters of one window of events, summed in memory so that each row is written once.

``stats_usage_daily`` rows get the sum of their events' deltas; ``stats_user_daily`` rows (what
the daily limits compare against) get theirs too, and keep each event's share in event order
(:class:`Step`) so that the limit check can tell which event crossed a maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from wa_common.schemas.status import LimitName
from wa_stats.repository import DailyKey, UsageKey

# The daily limits and the ``stats_user_daily`` counter each compares against.
DAILY_LIMITS = (LimitName.MAX_MESSAGES_SENT, LimitName.MAX_API_CALLS)


@dataclass(frozen=True)
class Step:
    """One event's share of a daily counter: its place among the window's steps (``order``,
    from 0), the ``amount`` it adds, and the instance it was about (``""``: none)."""

    order: int
    amount: int
    instance_id: str


@dataclass
class DailyIncrement:
    """What a window adds to one user's day: per daily limit, the steps in event order."""

    user_id: str
    day: date
    steps: dict[LimitName, list[Step]] = field(default_factory=dict)

    def total(self, name: LimitName) -> int:
        """The sum of the steps of limit ``name`` (0 when none)."""
        return sum(step.amount for step in self.steps.get(name, ()))


class Tally:
    """Counters of one window, by row; nothing is written until the window is flushed."""

    def __init__(self) -> None:
        self.usage: dict[UsageKey, dict[str, int]] = {}
        self.daily: dict[DailyKey, DailyIncrement] = {}
        self._steps = 0

    def add_usage(self, user_id: str, instance_id: str, day: date, deltas: Mapping[str, int]) -> None:
        """Add ``deltas`` (counter name → amount) to the row of (user, instance, day)."""
        row = self.usage.setdefault((user_id, instance_id, day), {})
        for name, amount in deltas.items():
            row[name] = row.get(name, 0) + amount

    def add_daily(self, user_id: str, day: date, name: LimitName, amount: int, instance_id: str) -> None:
        """Add ``amount`` to the user's day counter of daily limit ``name`` (one of
        :data:`DAILY_LIMITS`), as the next step of the window."""
        if name not in DAILY_LIMITS:
            raise ValueError(f"{name} is not a daily limit")
        increment = self.daily.setdefault((user_id, day), DailyIncrement(user_id, day))
        increment.steps.setdefault(name, []).append(Step(self._steps, amount, instance_id))
        self._steps += 1

    def daily_deltas(self) -> dict[DailyKey, tuple[int, int]]:
        """``(messages_sent, api_calls)`` to add per (user, day)."""
        return {
            key: (inc.total(LimitName.MAX_MESSAGES_SENT), inc.total(LimitName.MAX_API_CALLS))
            for key, inc in self.daily.items()
        }
