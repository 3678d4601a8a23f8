"""Counting events in windows: many deliveries, one transaction.

The consumer hands each event to :meth:`Counting.submit`; a group commit
(:class:`wa_common.batching.GroupCommit`) gathers what arrives together into a window, and
:meth:`Counting.count` processes a window in one transaction:

1. each event is read (:mod:`wa_stats.handlers`): an event of a type stats does not count is
   ``ignored``; one whose data is unusable gets :class:`MalformedEvent` (its delivery alone is
   dead-lettered); the later copies of an id already in the window are ``duplicate``;
2. the ids of the others are recorded in one statement; those recorded before are ``duplicate``;
3. the instances the new events need are read in one query; the new events are applied in event
   order (replicas written as they come, counters summed in memory);
4. each counter row is written once (one statement per table), then the daily limits are checked
   against the new totals (:meth:`wa_stats.limits.LimitKeeper.check_daily`);
5. commit; the limit events the window announced are published; metrics.

A store error fails the whole window (every delivery returns to the queue; the recorded ids make
the retry count each event once).
"""

from __future__ import annotations

from typing import Any

from wa_common.batching import GroupCommit
from wa_common.clock import Clock
from wa_common.logs import get_logger
from wa_common.schemas import Event
from wa_stats.handlers import EventHandlers, Handler, MalformedEvent
from wa_stats.limits import LimitKeeper
from wa_stats.metrics import DUPLICATES_SKIPPED, EVENT_LAG, EVENTS_PROCESSED, type_label
from wa_stats.repository import StatsRepository
from wa_stats.window import Window

__all__ = ["COUNTED", "DUPLICATE", "IGNORED", "Counting", "MalformedEvent"]

log = get_logger(__name__)

COUNTED = "counted"
DUPLICATE = "duplicate"
IGNORED = "ignored"

# Most events one window holds (the stats consumer's default prefetch: every delivery in flight).
MAX_WINDOW = 256

Outcome = str | MalformedEvent


class Counting:
    """Counts events into the store; limits crossed on the way are left to ``limits``.

    ``max_window`` caps the events of one window (the rest wait for the next).
    """

    def __init__(
        self, repo: StatsRepository, limits: LimitKeeper, now: Clock, *, max_window: int = MAX_WINDOW
    ) -> None:
        self.repo = repo
        self.limits = limits
        self.now = now
        self.handlers = EventHandlers(repo, limits).by_type
        self._windows: GroupCommit[Event, str] = GroupCommit(
            self.count, name="stats_events", max_items=max_window
        )

    async def submit(self, event: Event) -> str:
        """Count ``event`` in the next window; returns ``counted``, ``duplicate`` or ``ignored``.

        Raises :class:`MalformedEvent` for this event alone; a store error (raised to every event
        of the window) means the event was not counted.
        """
        return await self._windows.submit(event)

    async def handle_event(self, event: Event) -> str:
        """Count ``event`` alone, in a window of its own (as :meth:`submit`)."""
        (outcome,) = await self.count([event])
        if isinstance(outcome, MalformedEvent):
            raise outcome
        return outcome

    async def count(self, events: list[Event]) -> list[Outcome]:
        """Count a window of ``events`` in one transaction (steps: module docstring); returns one
        outcome per event, in order: ``counted``, ``duplicate``, ``ignored`` or the event's
        :class:`MalformedEvent`. Store errors propagate (nothing of the window is kept)."""
        now = self.now()
        outcomes: list[Outcome] = [IGNORED] * len(events)
        todo: list[tuple[int, Handler[Any], Any]] = []
        seen: set[str] = set()
        for i, event in enumerate(events):
            EVENT_LAG.observe(max((now - event.occurred_at).total_seconds(), 0.0))
            handler = self.handlers.get(event.type)
            if handler is None:
                continue
            try:
                data = handler.read(event)
            except MalformedEvent as exc:
                outcomes[i] = exc
                continue
            if event.id in seen:
                outcomes[i] = DUPLICATE
                continue
            seen.add(event.id)
            todo.append((i, handler, data))
        if todo:
            async with self.limits.unit(now) as unit:
                window = Window(unit, self.repo.replicas)
                new = await self.repo.usage.record_processed(unit.conn, seen, now)
                fresh = [(i, h, d) for i, h, d in todo if events[i].id in new]
                await window.instances(name for i, h, d in fresh for name in h.lookups(events[i], d))
                for i, _, _ in todo:
                    outcomes[i] = DUPLICATE
                for i, handler, data in fresh:  # in event order
                    await handler.apply(window, events[i], data)
                    outcomes[i] = COUNTED
                await self._write_counters(window)
        self._observe(events, outcomes)
        return outcomes

    async def _write_counters(self, window: Window) -> None:
        """Each counter row of the window once, then the daily limits on the new totals."""
        tally = window.tally
        await self.repo.usage.add_usage(window.conn, tally.usage)
        totals = await self.repo.usage.add_user_daily(window.conn, tally.daily_deltas())
        if totals:
            await self.limits.check_daily(window.unit, tally.daily.values(), totals)

    @staticmethod
    def _observe(events: list[Event], outcomes: list[Outcome]) -> None:
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, MalformedEvent):
                continue
            label = type_label(event.type)
            EVENTS_PROCESSED.labels(label).inc()
            if outcome == DUPLICATE:
                DUPLICATES_SKIPPED.labels(label).inc()
                log.info("duplicate event skipped", event_id=event.id, type=event.type)
