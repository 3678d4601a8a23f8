"""The stats service's logic: counting events, answering queries, enforcing limits.

Sources:
- ``message_sent`` / ``message_received`` (session workers): ``messagesSent`` / ``messagesReceived``,
  ``mediaSent`` / ``mediaReceived`` when ``data.hasMedia`` is true, ``totalMediaSize`` += the
  event's ``meta.mediaSize`` (bytes);
- ``usage.api_calls`` (gateways, :class:`~wa_common.schemas.events.ApiUsageBatch`): ``apiCalls``
  per user, instance (or none) and the batch's ``day``. Each item is checked on its own (see
  :meth:`StatsService._usage_items`): one bad item never fails the batch, which carries every
  user's calls of an interval;
- ``webhook.delivered`` (dispatcher): ``webhookSent``;
- ``instance.created/updated/deleted``, ``connected`` / ``disconnected``: owners, names, whether an
  instance exists and is connected; ``user.created/updated/deleted`` (auth): users and ``active``.

Every counted event is processed in one transaction that also records its id, so a redelivered
event changes nothing. Counters go to the UTC day of the event's ``occurred_at``.

Limits: see :mod:`wa_common.schemas.stats` for the precise semantics of the ``limit_exceeded``
event. The event is written to an outbox in the transaction that detects the crossing and
published after the commit (and again by :meth:`StatsService.flush_outbox` if that failed).

The clock is injected (``now``): periods, limit resets and pruning follow it, so tests can roll
the day over without waiting.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_common.db import store_status
from wa_common.ids import is_id
from wa_common.logs import get_logger
from wa_common.schemas import Caller, Event, EventType, Query, Reply, utcnow
from wa_common.schemas.events import LimitExceededData
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.stats import (
    INSTANCE_PERIODS,
    STATS_INSTANCE,
    STATS_LIMITS_GET,
    STATS_LIMITS_SET,
    STATS_LIMITS_STATE,
    STATS_SYSTEM,
    STATS_USER,
    SYSTEM_PERIODS,
    USER_PERIODS,
    BlockedLimit,
    CountActive,
    DailyStat,
    InstanceStats,
    InstanceStatsQuery,
    InstanceUsage,
    LimitExceededMeta,
    Limits,
    LimitsQuery,
    LimitsState,
    LimitsStateQuery,
    SetLimitsQuery,
    SystemStats,
    SystemStatsQuery,
    UsageCounters,
    UserLimits,
    UserStats,
    UserStatsInstance,
    UserStatsQuery,
    UserStatsTotal,
)
from wa_common.schemas.text import storable
from wa_stats.metrics import (
    DUPLICATES_SKIPPED,
    EVENT_LAG,
    EVENTS_PROCESSED,
    LIMIT_EVENTS_PUBLISHED,
    QUERIES,
    USAGE_ITEMS_REJECTED,
    query_label,
    type_label,
)
from wa_stats.periods import InvalidPeriod, day_start, iso_utc, next_day_start, period_start, utc_day
from wa_stats.repository import COUNTERS, LimitUsage, LimitValues, StatsRepository

log = get_logger(__name__)

Clock = Callable[[], datetime]
Publish = Callable[[Event], Awaitable[None]]

MAX_MESSAGES_SENT = "maxMessagesSent"
MAX_API_CALLS = "maxApiCalls"
MAX_INSTANCES = "maxInstances"
# maxInstances is not per day: its single "period" is keyed by this date.
INSTANCES_PERIOD = date(1970, 1, 1)

# How old an unpublished limit event must be before the maintenance loop publishes it.
OUTBOX_GRACE = timedelta(seconds=15)

# User and instance ids: ULIDs, or what the gateway's routes accept. An id outside this format
# (a NUL byte from a URL such as /api/instances/%00/status, 10 KB of text) is never stored.
# Most API calls one usage item may carry (one user and instance over one gateway interval);
# far above what a replica serves, far below the counters' 64-bit range.
MAX_USAGE_COUNT = 10_000_000
# Longest instance name kept (the store's column); longer names are cut.
MAX_NAME_LENGTH = 255

COUNTED = "counted"
DUPLICATE = "duplicate"
IGNORED = "ignored"

_HANDLED = frozenset(
    {
        EventType.MESSAGE_SENT,
        EventType.MESSAGE_RECEIVED,
        EventType.API_USAGE,
        EventType.WEBHOOK_DELIVERED,
        EventType.INSTANCE_CREATED,
        EventType.INSTANCE_UPDATED,
        EventType.INSTANCE_DELETED,
        EventType.CONNECTED,
        EventType.DISCONNECTED,
        EventType.USER_CREATED,
        EventType.USER_UPDATED,
        EventType.USER_DELETED,
    }
)


class MalformedEvent(ValueError):
    """An event that can never be counted (its consumer dead-letters it at once)."""


class StatsError(Exception):
    """A query that fails with an HTTP-like ``status`` and a human-readable message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _naive(moment: datetime) -> datetime:
    """Naive UTC datetime, as the store keeps timestamps."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _clean_name(value: Any) -> str:
    """An instance name as stored: storable text (``wa_common.schemas.text.storable``), cut to
    ``MAX_NAME_LENGTH`` characters."""
    return storable(str(value or ""), MAX_NAME_LENGTH)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


class StatsService:
    """Counters, queries and limits over a :class:`StatsRepository`.

    ``publish`` sends an event on the bus (``Bus.publish_event``); ``now`` returns the current
    aware UTC time; ``dedup_retention`` is how long processed event ids are remembered.
    """

    def __init__(
        self,
        repo: StatsRepository,
        publish: Publish,
        *,
        now: Clock = utcnow,
        dedup_retention: timedelta = timedelta(days=7),
        database_url: str | None = None,
    ) -> None:
        self.repo = repo
        self.publish = publish
        self.now = now
        self.dedup_retention = dedup_retention
        self.database_url = database_url

    # --- events -------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> str:
        """Count ``event`` once; returns ``counted``, ``duplicate`` or ``ignored`` (other types).

        Raises :class:`MalformedEvent` for an event of a counted type whose data is unusable.
        Database errors propagate (the consumer returns the message to the queue).
        """
        label = type_label(event.type)
        now = self.now()
        EVENT_LAG.observe(max((now - event.occurred_at).total_seconds(), 0.0))
        if event.type not in _HANDLED:
            EVENTS_PROCESSED.labels(label).inc()
            return IGNORED
        pending: list[Event] = []
        async with self.repo.write() as conn:
            if not await self.repo.mark_processed(conn, event.id, _naive(now)):
                outcome = DUPLICATE
            else:
                await self._apply(conn, event, now, pending)
                outcome = COUNTED
        EVENTS_PROCESSED.labels(label).inc()
        if outcome == DUPLICATE:
            DUPLICATES_SKIPPED.labels(label).inc()
            log.info("duplicate event skipped", event_id=event.id, type=event.type)
        for limit_event in pending:
            await self._publish_limit_event(limit_event)
        return outcome

    async def _owner(self, conn: AsyncConnection, event: Event, instance_id: str) -> str:
        if event.user_id:
            return event.user_id
        if instance_id:
            info = await self.repo.instance(conn, instance_id)
            if info is not None:
                return info.user_id
        return ""

    async def _apply(self, conn: AsyncConnection, event: Event, now: datetime, pending: list[Event]) -> None:
        data = event.data
        kind = event.type
        day = utc_day(event.occurred_at)
        instance_id = event.instance_id or str(data.get("instanceId") or "")
        if kind in (EventType.MESSAGE_SENT, EventType.MESSAGE_RECEIVED):
            user_id = await self._owner(conn, event, instance_id)
            has_media = data.get("hasMedia") is True
            size = _non_negative_int(event.meta.get("mediaSize"))
            sent = kind == EventType.MESSAGE_SENT
            deltas = {
                "messages_sent" if sent else "messages_received": 1,
                "media_sent" if sent else "media_received": int(has_media),
                "total_media_size": size,
            }
            await self.repo.add_usage(conn, user_id, instance_id, day, deltas)
            if sent and user_id:
                messages, _ = await self.repo.add_user_daily(conn, user_id, day, messages_sent=1)
                await self._check_daily(
                    conn, user_id, MAX_MESSAGES_SENT, messages, day, instance_id, now, pending
                )
        elif kind == EventType.API_USAGE:
            await self._apply_api_usage(conn, event, now, pending)
        elif kind == EventType.WEBHOOK_DELIVERED:
            user_id = await self._owner(conn, event, instance_id)
            await self.repo.add_usage(conn, user_id, instance_id, day, {"webhook_sent": 1})
        elif kind in (EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED):
            user_id = str(data.get("userId") or event.user_id or "")
            if not instance_id or not user_id:
                raise MalformedEvent(f"{kind} without instanceId/userId")
            snapshot_at = str(data.get("updatedAt") or iso_utc(event.occurred_at))
            await self.repo.upsert_instance(
                conn, instance_id, user_id, _clean_name(data.get("name")), snapshot_at
            )
            if kind == EventType.INSTANCE_CREATED:
                await self._check_instances(conn, user_id, instance_id, now, pending)
        elif kind == EventType.INSTANCE_DELETED:
            user_id = str(data.get("userId") or event.user_id or "")
            if not instance_id:
                raise MalformedEvent("instance.deleted without instanceId")
            await self.repo.delete_instance(conn, instance_id, user_id)
            if user_id:
                limits = await self.repo.get_limits(conn, user_id)
                count = await self.repo.owned_instance_count(conn, user_id)
                if limits is None or limits.max_instances is None or count <= limits.max_instances:
                    await self.repo.delete_limit_event(conn, user_id, MAX_INSTANCES, INSTANCES_PERIOD)
        elif kind in (EventType.CONNECTED, EventType.DISCONNECTED):
            if not instance_id:
                raise MalformedEvent(f"{kind} without instance id")
            user_id = await self._owner(conn, event, instance_id)
            await self.repo.set_connected(
                conn, instance_id, user_id, kind == EventType.CONNECTED, _naive(event.occurred_at)
            )
        elif kind in (EventType.USER_CREATED, EventType.USER_UPDATED, EventType.USER_DELETED):
            user_id = str(data.get("userId") or event.user_id or "")
            if not user_id:
                raise MalformedEvent(f"{kind} without userId")
            await self.repo.upsert_user(
                conn,
                user_id,
                active=data.get("active", True) is not False and kind != EventType.USER_DELETED,
                role=str(data.get("role") or "user"),
                deleted=kind == EventType.USER_DELETED,
                at=_naive(event.occurred_at),
            )

    async def _apply_api_usage(
        self, conn: AsyncConnection, event: Event, now: datetime, pending: list[Event]
    ) -> None:
        per_row: dict[tuple[str, str], int] = defaultdict(int)
        per_user: dict[str, int] = defaultdict(int)
        day = self._usage_day(event)
        for user_id, instance_id, count in await self._usage_items(conn, event):
            per_row[(user_id, instance_id)] += count
            per_user[user_id] += count
        for (user_id, instance_id), count in sorted(per_row.items()):
            await self.repo.add_usage(conn, user_id, instance_id, day, {"api_calls": count})
        for user_id, count in sorted(per_user.items()):
            _, calls = await self.repo.add_user_daily(conn, user_id, day, api_calls=count)
            await self._check_daily(conn, user_id, MAX_API_CALLS, calls, day, None, now, pending)

    @staticmethod
    def _usage_day(event: Event) -> date:
        """The batch's ``day``, or the UTC day of the event when it is missing or not a date."""
        raw = event.data.get("day")
        try:
            return date.fromisoformat(raw) if isinstance(raw, str) else utc_day(event.occurred_at)
        except ValueError:
            log.warning(
                "usage.api_calls batch with an invalid day; counted on the event's day", event_id=event.id
            )
            return utc_day(event.occurred_at)

    async def _usage_items(self, conn: AsyncConnection, event: Event) -> list[tuple[str, str, int]]:
        """The countable ``(user id, instance id or "", count)`` items of a usage batch.

        Each item is checked on its own, never failing the batch (every user's calls of an
        interval), and each refusal is counted in ``wa_stats_api_usage_items_rejected_total``:

        - a ``userId`` that is not an id, or a ``count`` that is not an integer in
          1..``MAX_USAGE_COUNT``: the item is dropped (nobody to count it for, or no count);
        - an ``instanceId`` that is not an id, or an instance stats knows to be another user's:
          the calls are counted for the user without the instance, so a user's statistics never
          show an instance that is not theirs.
        """
        counts = event.data.get("counts")
        if not isinstance(counts, list):
            USAGE_ITEMS_REJECTED.labels("malformed").inc()
            log.warning("usage.api_calls batch without a list of counts", event_id=event.id)
            return []
        refused: Counter[str] = Counter()
        items: list[tuple[str, str, int]] = []
        for item in counts:
            if not isinstance(item, dict):
                refused["malformed"] += 1
                continue
            user_id, instance_id, count = item.get("userId"), item.get("instanceId"), item.get("count")
            if not is_id(user_id):
                refused["user_id"] += 1
                continue
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_USAGE_COUNT:
                refused["count"] += 1
                continue
            if instance_id is None or instance_id == "":
                instance_id = ""
            elif not is_id(instance_id):
                refused["instance_id"] += 1
                instance_id = ""
            items.append((str(user_id), str(instance_id), count))
        known = await self.repo.instances_named(conn, sorted({i for _, i, _ in items if i}))
        checked: list[tuple[str, str, int]] = []
        for user_id, instance_id, count in items:
            info = known.get(instance_id) if instance_id else None
            if info is not None and info.user_id and info.user_id != user_id:
                refused["foreign_instance"] += 1
                instance_id = ""
            checked.append((user_id, instance_id, count))
        if refused:
            for reason, n in refused.items():
                USAGE_ITEMS_REJECTED.labels(reason).inc(n)
            # One line per batch, with counts only: never the items' values.
            log.warning("usage.api_calls items not counted as sent", event_id=event.id, **dict(refused))
        return checked

    # --- limits -------------------------------------------------------------------------------

    async def _check_daily(
        self,
        conn: AsyncConnection,
        user_id: str,
        limit_name: str,
        value: int,
        day: date,
        instance_id: str | None,
        now: datetime,
        pending: list[Event],
    ) -> None:
        """Queue a limit event once ``value`` (the day's usage) reaches the user's daily limit.

        Reaching the maximum uses the quota up: with ``maxMessagesSent=5`` the 5th send of the
        day announces it and the gateway refuses the 6th (issue 7 acceptance).
        """
        limits = await self.repo.get_limits(conn, user_id)
        maximum = _limit_value(limits, limit_name)
        if maximum is None or value < maximum:
            return
        resets_at = day_start(day + timedelta(days=1))
        if resets_at <= now:
            return  # a late event for a day that is over: nothing left to block
        await self._record_limit(
            conn, user_id, limit_name, maximum, day, resets_at, instance_id, now, pending
        )

    async def _check_instances(
        self,
        conn: AsyncConnection,
        user_id: str,
        instance_id: str | None,
        now: datetime,
        pending: list[Event],
    ) -> None:
        limits = await self.repo.get_limits(conn, user_id)
        maximum = _limit_value(limits, MAX_INSTANCES)
        if maximum is None:
            return
        if await self.repo.owned_instance_count(conn, user_id) > maximum:
            await self._record_limit(
                conn, user_id, MAX_INSTANCES, maximum, INSTANCES_PERIOD, None, instance_id, now, pending
            )

    async def _record_limit(
        self,
        conn: AsyncConnection,
        user_id: str,
        limit_name: str,
        maximum: int,
        period: date,
        resets_at: datetime | None,
        instance_id: str | None,
        now: datetime,
        pending: list[Event],
    ) -> None:
        """Write the period's ``limit_exceeded`` event to the outbox unless one is there already."""
        usage_day = period if resets_at is not None else utc_day(now)
        messages, calls = await self.repo.user_daily(conn, user_id, usage_day)
        event = Event(
            type=EventType.LIMIT_EXCEEDED,
            instance_id=instance_id or None,
            user_id=user_id,
            occurred_at=now,
            data=LimitExceededData(
                instance_id=instance_id or None,
                exceeded_limits=[limit_name],
                usage={"messagesSent": messages, "apiCalls": calls},
            ).dump(),
            meta=LimitExceededMeta(
                limit=limit_name,
                max=maximum,
                period_start=iso_utc(day_start(period)) if resets_at is not None else None,
                resets_at=iso_utc(resets_at) if resets_at is not None else None,
            ).dump(),
        )
        inserted = await self.repo.insert_limit_event(
            conn,
            user_id=user_id,
            limit_name=limit_name,
            period_start=period,
            event_id=event.id,
            body=event.model_dump_json(),
            at=_naive(now),
        )
        if inserted:
            pending.append(event)
            log.info("limit exceeded", user_id=user_id, limit=limit_name, max=maximum, event_id=event.id)

    async def _publish_limit_event(self, event: Event) -> bool:
        try:
            await self.publish(event)
        except Exception as exc:
            log.warning("limit event not published yet; will retry", event_id=event.id, error=str(exc))
            return False
        LIMIT_EVENTS_PUBLISHED.labels(str(event.meta.get("limit", "unknown"))).inc()
        await self.repo.mark_limit_event_published(event.id, _naive(self.now()))
        return True

    async def flush_outbox(self, grace: timedelta = OUTBOX_GRACE) -> int:
        """Publish limit events whose publication failed earlier; returns how many were sent.

        Rows younger than ``grace`` are left to the handler that wrote them (it publishes right
        after its commit), so a healthy run publishes each event once. A re-publication keeps the
        event id, so consumers deduplicate it.
        """
        sent = 0
        for row in await self.repo.unpublished_limit_events(_naive(self.now() - grace)):
            if await self._publish_limit_event(Event.model_validate_json(row.body)):
                sent += 1
        return sent

    async def prune(self) -> tuple[int, int]:
        """Forget processed event ids and published limit events older than the retention."""
        now = self.now()
        ids = await self.repo.prune_processed(_naive(now - self.dedup_retention))
        before = utc_day(now) - timedelta(days=max(int(self.dedup_retention.days), 1))
        limit_rows = await self.repo.prune_limit_events(before, keep=MAX_INSTANCES)
        return ids, limit_rows

    async def maintenance_loop(self, interval_s: float) -> None:
        """Every ``interval_s`` seconds: re-publish pending limit events, prune old rows."""
        while True:
            try:
                await self.flush_outbox()
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stats maintenance round failed")
            await asyncio.sleep(interval_s)

    def _blocked(self, row: LimitUsage, now: datetime) -> list[BlockedLimit]:
        blocked: list[BlockedLimit] = []
        resets = iso_utc(next_day_start(now))
        limits = row.limits
        if limits.max_messages_sent is not None and row.messages_sent >= limits.max_messages_sent:
            blocked.append(
                BlockedLimit(
                    user_id=row.user_id,
                    limit=MAX_MESSAGES_SENT,
                    max=limits.max_messages_sent,
                    usage=row.messages_sent,
                    resets_at=resets,
                )
            )
        if limits.max_api_calls is not None and row.api_calls >= limits.max_api_calls:
            blocked.append(
                BlockedLimit(
                    user_id=row.user_id,
                    limit=MAX_API_CALLS,
                    max=limits.max_api_calls,
                    usage=row.api_calls,
                    resets_at=resets,
                )
            )
        if limits.max_instances is not None and row.instance_count >= limits.max_instances:
            blocked.append(
                BlockedLimit(
                    user_id=row.user_id,
                    limit=MAX_INSTANCES,
                    max=limits.max_instances,
                    usage=row.instance_count,
                    resets_at=None,
                )
            )
        return blocked

    async def limits_state(self, user_id: str | None) -> LimitsState:
        """Blocks in force now for ``user_id`` (``None``: every user with limits)."""
        now = self.now()
        async with self.repo.read() as conn:
            rows = await self.repo.limit_usage(conn, utc_day(now), user_id)
        return LimitsState(blocked=[b for row in rows for b in self._blocked(row, now)])

    async def get_limits(self, user_id: str) -> UserLimits:
        now = self.now()
        async with self.repo.read() as conn:
            limits = await self.repo.get_limits(conn, user_id)
            rows = await self.repo.limit_usage(conn, utc_day(now), user_id)
        return UserLimits(
            user_id=user_id,
            limits=_limits_model(limits),
            state=[b for row in rows for b in self._blocked(row, now)],
        )

    async def set_limits(self, user_id: str, limits: Limits) -> UserLimits:
        """Replace a user's limits. A limit the user already exceeds under the new values is
        announced at once (one ``limit_exceeded`` per period, as for a crossing); a period's
        announcement is forgotten when the new values no longer block, so a later crossing
        announces again."""
        now = self.now()
        today = utc_day(now)
        values = LimitValues(limits.max_messages_sent, limits.max_api_calls, limits.max_instances)
        pending: list[Event] = []
        async with self.repo.write() as conn:
            await self.repo.set_limits(conn, user_id, values, _naive(now))
            (row,) = await self.repo.limit_usage(conn, today, user_id)
            blocked = {b.limit for b in self._blocked(row, now)}
            resets_at = next_day_start(now)
            for name in (MAX_MESSAGES_SENT, MAX_API_CALLS):
                maximum = _limit_value(values, name)
                if name in blocked and maximum is not None:
                    await self._record_limit(
                        conn, user_id, name, maximum, today, resets_at, None, now, pending
                    )
                else:
                    await self.repo.delete_limit_event(conn, user_id, name, today)
            if values.max_instances is None or row.instance_count <= values.max_instances:
                await self.repo.delete_limit_event(conn, user_id, MAX_INSTANCES, INSTANCES_PERIOD)
            else:
                await self._record_limit(
                    conn,
                    user_id,
                    MAX_INSTANCES,
                    values.max_instances,
                    INSTANCES_PERIOD,
                    None,
                    None,
                    now,
                    pending,
                )
        for event in pending:
            await self._publish_limit_event(event)
        return await self.get_limits(user_id)

    # --- queries ------------------------------------------------------------------------------

    async def user_stats(self, user_id: str, period: str) -> UserStats:
        """``GET /api/stats/user``: the user's usage in ``period`` (week|month|year|all)."""
        since = period_start(period, self.now(), USER_PERIODS)
        async with self.repo.read() as conn:
            usage = await self.repo.usage_by_instance(conn, user_id, since)
            owned = {i.instance_id: i for i in await self.repo.instances_of(conn, user_id)}
            others = await self.repo.instances_named(conn, sorted(i for i in usage if i and i not in owned))
        # Counters of instances the user no longer owns (deleted) are listed; an instance known to
        # be someone else's never is (calls attributed to it before attribution was checked count
        # in the user's totals only).
        other_ids = sorted(
            i
            for i in usage
            if i
            and i not in owned
            and not ((info := others.get(i)) and info.user_id and info.user_id != user_id)
        )
        total = {c: sum(row[c] for row in usage.values()) for c in COUNTERS}
        rows = []
        for instance_id in sorted(set(owned) | set(other_ids)):
            info = owned.get(instance_id) or others.get(instance_id)
            counters = usage.get(instance_id, dict.fromkeys(COUNTERS, 0))
            rows.append(
                UserStatsInstance(instance_id=instance_id, name=info.name if info else "", **counters)
            )
        return UserStats(total=UserStatsTotal(instance_count=len(owned), **total), instances=rows)

    async def instance_stats(self, caller: Caller | None, instance_id: str, period: str) -> InstanceStats:
        """``GET /api/stats/instances/{id}``: usage in ``period`` (today|week|month|all).

        Raises :class:`StatsError` 404 when the instance is unknown, deleted or not the caller's.
        """
        since = period_start(period, self.now(), INSTANCE_PERIODS)
        if not is_id(instance_id):
            raise StatsError(404, "instance not found")
        not_found = StatsError(404, f"instance {instance_id} not found")
        async with self.repo.read() as conn:
            info = await self.repo.instance(conn, instance_id)
            # Never another known user's counters: only the owner's when stats knows the owner;
            # otherwise everyone's for an admin and the caller's own for a user (calls another
            # user made about the same id are theirs, not this caller's to see). Counters of no
            # known user (events that named none) stay in.
            counted_for: str | None
            if info is not None:
                if info.deleted:
                    raise not_found
                owners = {info.user_id}
                counted_for = info.user_id or None
            else:
                owners = await self.repo.instance_usage_owners(conn, instance_id)
                if not owners:
                    raise not_found
                counted_for = caller.user_id if caller is not None and not caller.is_admin else None
            if caller is not None and not caller.is_admin and caller.user_id not in owners:
                raise not_found
            totals = await self.repo.usage_total(conn, since, instance_id=instance_id, user_id=counted_for)
            daily = await self.repo.instance_daily(conn, instance_id, since, user_id=counted_for)
        return InstanceStats(
            usage=InstanceUsage(
                **totals,
                daily_stats=[DailyStat(date=iso_utc(day_start(d)), **counters) for d, counters in daily],
            )
        )

    async def system_stats(self, period: str) -> SystemStats:
        """``GET /api/stats/system``: instances, users and the whole usage in ``period``."""
        since = period_start(period, self.now(), SYSTEM_PERIODS)
        async with self.repo.read() as conn:
            instances, connected, users, active = await self.repo.system_counts(conn)
            usage = await self.repo.usage_total(conn, since)
        return SystemStats(
            instances=CountActive(total=instances, active=connected),
            users=CountActive(total=users, active=active),
            usage=UsageCounters(**usage),
        )

    async def answer(self, query: Query) -> Reply:
        """Answer one bus query (see :mod:`wa_common.schemas.stats` for names and shapes)."""
        status = 500
        try:
            data = await self._dispatch(query)
            status = 200
            return Reply.success(data)
        except StatsError as exc:
            status = exc.status
            return Reply.failure(exc.status, exc.message)
        except InvalidPeriod as exc:
            status = 400
            return Reply.failure(400, str(exc), [{"field": "period", "message": str(exc)}])
        except ValidationError as exc:
            status = 400
            details = [
                {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
            ]
            return Reply.failure(400, f"invalid payload for {query.name}", details)
        except Exception:
            log.exception("stats query failed", query=query.name)
            return Reply.failure(500, "statistics are unavailable right now")
        finally:
            QUERIES.labels(query_label(query.name), str(status)).inc()

    async def _dispatch(self, query: Query) -> dict[str, Any]:
        caller = query.caller
        is_admin = caller is None or caller.is_admin
        payload = query.payload
        if caller is not None and not is_id(caller.user_id):
            raise StatsError(400, "the caller's user id is not a valid user id")
        if query.name == STATS_USER:
            user_q = UserStatsQuery.model_validate(payload)
            target = _target_user(caller, user_q.user_id, "statistics")
            return (await self.user_stats(target, user_q.period)).dump()
        if query.name == STATS_INSTANCE:
            inst_q = InstanceStatsQuery.model_validate(payload)
            instance_id = query.instance_id or inst_q.instance_id
            if not instance_id:
                raise StatsError(400, "instance id is required")
            return (await self.instance_stats(caller, instance_id, inst_q.period)).dump()
        if query.name == STATS_SYSTEM:
            if not is_admin:
                raise StatsError(403, "administrator rights required")
            return (await self.system_stats(SystemStatsQuery.model_validate(payload).period)).dump()
        if query.name == STATS_LIMITS_GET:
            target = _target_user(caller, LimitsQuery.model_validate(payload).user_id, "limits")
            return (await self.get_limits(target)).dump()
        if query.name == STATS_LIMITS_SET:
            if not is_admin:
                raise StatsError(403, "administrator rights required")
            set_q = SetLimitsQuery.model_validate(payload)
            _check_user_id(set_q.user_id)
            return (await self.set_limits(set_q.user_id, set_q.limits)).dump()
        if query.name == STATS_LIMITS_STATE:
            state_q = LimitsStateQuery.model_validate(payload)
            if state_q.user_id is None and not is_admin:
                raise StatsError(403, "administrator rights required to list every user's limits")
            target_user = (
                _target_user(caller, state_q.user_id, "limits") if state_q.user_id is not None else None
            )
            return (await self.limits_state(target_user)).dump()
        if query.name == STORE_STATUS and self.database_url is not None:
            if not is_admin:
                raise StatsError(403, "administrator rights required")
            return store_status(self.database_url)
        raise StatsError(400, f"unknown stats query {query.name!r}")


STORE_STATUS = SessionQuery.STORE_STATUS.value


def _check_user_id(user_id: str) -> None:
    """Refuse (400) a ``userId`` that is not an id: it is the caller's input, never stored."""
    if not is_id(user_id):
        raise StatsError(400, "userId is not a valid user id")


def _target_user(caller: Caller | None, requested: str | None, what: str) -> str:
    """The user a query is about: ``requested`` (admins/internal only) or the caller."""
    if requested is None:
        if caller is None:
            raise StatsError(400, "userId is required")
        return caller.user_id
    _check_user_id(requested)
    if caller is not None and not caller.is_admin and requested != caller.user_id:
        raise StatsError(403, f"only an administrator may read another user's {what}")
    return requested


def _limit_value(limits: LimitValues | None, name: str) -> int | None:
    if limits is None:
        return None
    if name == MAX_MESSAGES_SENT:
        return limits.max_messages_sent
    if name == MAX_API_CALLS:
        return limits.max_api_calls
    return limits.max_instances


def _limits_model(limits: LimitValues | None) -> Limits:
    if limits is None:
        return Limits()
    return Limits(
        max_messages_sent=limits.max_messages_sent,
        max_api_calls=limits.max_api_calls,
        max_instances=limits.max_instances,
    )
