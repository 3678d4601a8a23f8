"""Usage limits: when usage crosses a user's limit, the ``limit_exceeded`` event, and the outbox
that publishes it (the precise semantics: :mod:`wa_common.schemas.stats`).

- ``maxMessagesSent`` and ``maxApiCalls`` count per UTC day; reaching the maximum uses the quota
  up (with ``maxMessagesSent=5`` the 5th send of the day announces it and the gateway refuses
  the 6th);
- ``maxInstances`` is a standing count: creating blocks at the maximum, and ``limit_exceeded``
  is announced only when an ``instance.created`` takes the count above it (a race between
  gateways); its single "period" is :data:`INSTANCES_PERIOD`.

Daily limits are checked once per window of events (:meth:`LimitKeeper.check_daily`), against
the totals the window's counters reached; the event whose share crossed a maximum is the one
announced (its instance), and the ``usage`` an announcement reports is the day's at the end of its
window. A crossing is written to the outbox (one row per user, limit and period) in the
transaction that detects it, and published after that transaction commits
(:meth:`LimitKeeper.unit`); events whose publication failed are published again by
:meth:`LimitKeeper.flush_outbox`, with the same id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.clock import Clock
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import LimitExceededData
from wa_common.schemas.stats import BlockedLimit, LimitExceededMeta, Limits
from wa_common.schemas.status import LimitName
from wa_stats.metrics import LIMIT_EVENTS_PUBLISHED
from wa_stats.periods import day_start, utc_day
from wa_stats.repository import DailyKey, LimitUsage, StatsRepository
from wa_stats.tally import DailyIncrement, Step

log = get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]

# maxInstances is not per day: its single "period" is keyed by this date.
INSTANCES_PERIOD = date(1970, 1, 1)

# How old an unpublished limit event must be before the maintenance loop publishes it.
OUTBOX_GRACE = timedelta(seconds=15)


def limit_period(name: LimitName, day: date) -> tuple[date, datetime | None]:
    """``(period, resets at)`` of limit ``name`` on ``day``: the day and the next day's start for
    a daily limit; :data:`INSTANCES_PERIOD` and no reset for ``maxInstances``."""
    if name is LimitName.MAX_INSTANCES:
        return INSTANCES_PERIOD, None
    return day, day_start(day + timedelta(days=1))


def crossed(name: LimitName, usage: int, maximum: int | None) -> bool:
    """Whether ``usage`` announces limit ``name``: a daily quota is used up at its maximum,
    ``maxInstances`` is exceeded above it."""
    if maximum is None:
        return False
    return usage > maximum if name is LimitName.MAX_INSTANCES else usage >= maximum


def first_crossing(name: LimitName, total: int, maximum: int | None, steps: Sequence[Step]) -> Step | None:
    """The step (of those that made up the last ``sum(steps)`` of ``total``, in order) after
    which the usage was across ``maximum``: the first step when it was across before them;
    ``None`` when ``total`` is not across (or there are no steps)."""
    if not steps or maximum is None or not crossed(name, total, maximum):
        return None
    usage = total - sum(step.amount for step in steps)
    for step in steps:
        usage += step.amount
        if crossed(name, usage, maximum):
            return step
    return steps[-1]


def blocked(row: LimitUsage, now: datetime) -> list[BlockedLimit]:
    """The blocks in force at ``now`` for ``row``'s user: each limit whose usage is at or above
    its maximum (for ``maxInstances``: creating one more is refused)."""
    blocks = []
    for name in LimitName:
        maximum, usage = row.limits.maximum(name), row.usage(name)
        if maximum is not None and usage >= maximum:
            _, resets_at = limit_period(name, utc_day(now))
            blocks.append(
                BlockedLimit(user_id=row.user_id, limit=name, max=maximum, usage=usage, resets_at=resets_at)
            )
    return blocks


@dataclass
class Unit:
    """One write transaction: its connection, the time it runs at, and the limit events it
    wrote to the outbox (published after the commit)."""

    conn: AsyncConnection
    now: datetime
    announced: list[Event] = field(default_factory=list)


class LimitKeeper:
    """Detects crossings inside a :class:`Unit`, keeps the outbox, publishes with ``publish``
    (``Bus.publish_event``)."""

    def __init__(self, repo: StatsRepository, publish: Publish, now: Clock) -> None:
        self.repo = repo
        self.publish = publish
        self.now = now

    @asynccontextmanager
    async def unit(self, now: datetime | None = None) -> AsyncIterator[Unit]:
        """A write transaction at ``now`` (default: the clock's) whose limit events are
        published once it has committed."""
        async with self.repo.write() as conn:
            unit = Unit(conn, now or self.now())
            yield unit
        for event in unit.announced:
            await self.publish_one(event)

    # --- crossings ----------------------------------------------------------------------------

    async def check(
        self, unit: Unit, user_id: str, name: LimitName, usage: int, day: date, instance_id: str | None
    ) -> None:
        """Announce limit ``name`` when ``usage`` (on ``day``) crosses the user's maximum, unless
        the day is over (a late event: nothing left to block)."""
        limits = await self.repo.limits.get_limits(unit.conn, user_id)
        maximum = limits.maximum(name) if limits is not None else None
        if maximum is None or not crossed(name, usage, maximum):
            return
        await self._announce(unit, user_id, name, maximum, day, instance_id)

    async def check_daily(
        self, unit: Unit, increments: Iterable[DailyIncrement], totals: Mapping[DailyKey, tuple[int, int]]
    ) -> None:
        """After a window's day totals were written (``totals``: the new ``(messages_sent,
        api_calls)`` per (user, day)): announce each daily limit a user is across, as the event
        that crossed it would have (its instance; the first of the window when the user was
        across already), in the order of those events. One query for every user's limits."""
        increments = list(increments)
        limits = await self.repo.limits.limits_of(unit.conn, (inc.user_id for inc in increments))
        crossings: list[tuple[Step, str, LimitName, int, date]] = []
        for inc in increments:
            user_limits = limits.get(inc.user_id)
            if user_limits is None:
                continue
            messages, calls = totals[(inc.user_id, inc.day)]
            for name, total in ((LimitName.MAX_MESSAGES_SENT, messages), (LimitName.MAX_API_CALLS, calls)):
                maximum = user_limits.maximum(name)
                step = first_crossing(name, total, maximum, inc.steps.get(name, []))
                if maximum is not None and step is not None:
                    crossings.append((step, inc.user_id, name, maximum, inc.day))
        for step, user_id, name, maximum, day in sorted(crossings, key=lambda c: c[0].order):
            await self._announce(unit, user_id, name, maximum, day, step.instance_id)

    async def _announce(
        self, unit: Unit, user_id: str, name: LimitName, maximum: int, day: date, instance_id: str | None
    ) -> None:
        """Record the crossing of ``name`` on ``day`` unless its period is over."""
        period, resets_at = limit_period(name, day)
        if resets_at is not None and resets_at <= unit.now:
            return
        await self._record(unit, user_id, name, maximum, period, resets_at, instance_id)

    async def check_instances(self, unit: Unit, user_id: str, instance_id: str) -> None:
        """After ``instance_id`` was created: announce ``maxInstances`` if the user now owns more."""
        count = await self.repo.replicas.owned_instance_count(unit.conn, user_id)
        await self.check(unit, user_id, LimitName.MAX_INSTANCES, count, utc_day(unit.now), instance_id)

    async def instance_deleted(self, unit: Unit, user_id: str) -> None:
        """After a deletion: forget the ``maxInstances`` announcement once the user is back at
        the maximum or below, so that a later crossing announces again."""
        limits = await self.repo.limits.get_limits(unit.conn, user_id)
        count = await self.repo.replicas.owned_instance_count(unit.conn, user_id)
        maximum = limits.max_instances if limits is not None else None
        if not crossed(LimitName.MAX_INSTANCES, count, maximum):
            await self.repo.outbox.delete_limit_event(
                unit.conn, user_id, LimitName.MAX_INSTANCES, INSTANCES_PERIOD
            )

    async def replace(self, unit: Unit, user_id: str, limits: Limits) -> None:
        """Store the user's new ``limits``. A limit the user already crosses under them is
        announced at once (once per period, as for a crossing); a period's announcement is
        forgotten when the new values no longer block, so a later crossing announces again."""
        await self.repo.limits.set_limits(unit.conn, user_id, limits, unit.now)
        today = utc_day(unit.now)
        (row,) = await self.repo.limits.limit_usage(unit.conn, today, user_id)
        for name in LimitName:
            maximum = limits.maximum(name)
            period, resets_at = limit_period(name, today)
            if maximum is not None and crossed(name, row.usage(name), maximum):
                await self._record(unit, user_id, name, maximum, period, resets_at, None)
            else:
                await self.repo.outbox.delete_limit_event(unit.conn, user_id, name, period)

    async def _record(
        self,
        unit: Unit,
        user_id: str,
        name: LimitName,
        maximum: int,
        period: date,
        resets_at: datetime | None,
        instance_id: str | None,
    ) -> None:
        """Write the period's ``limit_exceeded`` event to the outbox unless one is there already."""
        usage_day = period if resets_at is not None else utc_day(unit.now)
        messages, calls = await self.repo.usage.user_daily(unit.conn, user_id, usage_day)
        event = Event(
            type=EventType.LIMIT_EXCEEDED,
            instance_id=instance_id or None,
            user_id=user_id,
            occurred_at=unit.now,
            data=LimitExceededData(
                instance_id=instance_id or None,
                exceeded_limits=[name],
                usage={"messagesSent": messages, "apiCalls": calls},
            ).dump(),
            meta=LimitExceededMeta(
                limit=name,
                max=maximum,
                period_start=day_start(period) if resets_at is not None else None,
                resets_at=resets_at,
            ).dump(),
        )
        inserted = await self.repo.outbox.insert_limit_event(
            unit.conn,
            user_id=user_id,
            limit_name=name,
            period_start=period,
            event_id=event.id,
            body=event.model_dump_json(),
            at=unit.now,
        )
        if inserted:
            unit.announced.append(event)
            log.info("limit exceeded", user_id=user_id, limit=name, max=maximum, event_id=event.id)

    # --- the outbox ---------------------------------------------------------------------------

    async def publish_one(self, event: Event) -> bool:
        """Publish a limit event and mark it published; False (logged) if the bus refused it."""
        try:
            await self.publish(event)
        except Exception as exc:
            log.warning("limit event not published yet; will retry", event_id=event.id, error=str(exc))
            return False
        LIMIT_EVENTS_PUBLISHED.labels(str(event.meta.get("limit", "unknown"))).inc()
        await self.repo.outbox.mark_limit_event_published(event.id, self.now())
        return True

    async def flush_outbox(self, grace: timedelta = OUTBOX_GRACE) -> int:
        """Publish limit events whose publication failed earlier; returns how many were sent.

        Rows younger than ``grace`` are left to the transaction that wrote them (it publishes
        right after its commit), so a healthy run publishes each event once. A re-publication
        keeps the event id, so consumers deduplicate it.
        """
        sent = 0
        for row in await self.repo.outbox.unpublished_limit_events(self.now() - grace):
            if await self.publish_one(Event.model_validate_json(row.body)):
                sent += 1
        return sent

    async def prune(self, before: date) -> int:
        """Forget published daily-limit events of periods before ``before``."""
        return await self.repo.outbox.prune_limit_events(before, keep=LimitName.MAX_INSTANCES)
