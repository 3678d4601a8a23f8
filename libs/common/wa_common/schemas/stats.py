"""The stats service's bus contract: query names, payloads, reply shapes, limit semantics.

Owned by the stats service (issue 7); the gateway calls these queries and relays ``Reply.data``.

Transport
---------
Every query is a :class:`wa_common.schemas.Query` published on exchange ``wa.commands`` with
routing key ``wa.queries.stats`` (``STATS_QUERY_QUEUE``), answered with a
:class:`wa_common.schemas.Reply` (``RpcClient.call``). ``Query.name`` is one of the ``STATS_*``
names below, ``Query.payload`` the payload model's ``dump()`` (camelCase keys), ``Query.caller``
the authenticated caller (``Caller(user_id, role)``). A query with ``caller=None`` is an internal
call from another service and is treated like an admin (the bus is internal and trusted).

``Reply.data`` of a successful reply is exactly the JSON body the gateway returns (the reference's
shapes for the three statistics endpoints). Errors: ``Reply.failure(status, error)`` with
400 (invalid period, malformed payload, unknown query name), 403 (admin-only query by a user),
404 (instance unknown, deleted, or not the caller's), 500 (store failure).

Periods (UTC, calendar-aligned; the current period is the one containing "now")
------------------------------------------------------------------------------
- ``today``: from 00:00 UTC of the current day.
- ``week``: from Monday 00:00 UTC of the current ISO week.
- ``month``: from the 1st of the current month, 00:00 UTC.
- ``year``: from January 1st of the current year, 00:00 UTC.
- ``all``: every recorded day.
Counters are kept per UTC day of the event's ``occurred_at`` (API calls: the batch's ``day``), so
a period is a whole number of days and includes every counted day from its start up to now.

Limits (per user; ``None`` = unlimited)
---------------------------------------
- ``maxMessagesSent``: ``message_sent`` events per UTC day (all the user's instances together).
- ``maxApiCalls``: API calls per UTC day (from the gateways' ``usage.api_calls`` batches).
- ``maxInstances``: instances the user owns at the same time (not per day).

A limit is *used up* (and ``limit_exceeded`` announced) when usage reaches the maximum: with
``maxMessagesSent=5`` the 5th ``message_sent`` of the day announces it and the gateway refuses
the 6th send with 429 (issue 7's acceptance). ``maxInstances`` is different: creating is
refused while the user owns ``maxInstances`` instances (:data:`STATS_LIMITS_STATE` reports it;
the gateway asks before a create), and ``limit_exceeded`` is announced only when an
``instance.created`` really takes the count above the maximum (a race between gateways).

The ``limit_exceeded`` event
----------------------------
When an event uses a limit up, stats publishes exactly ONE ``limit_exceeded`` event per
user, limit and period (a UTC day for the daily limits; for ``maxInstances`` until the count falls
back to the maximum or below), also when the triggering event is redelivered or more events
arrive after it. It is an ordinary :class:`~wa_common.schemas.Event` on ``wa.events`` with routing
key ``limit_exceeded.<instance id or ->``:

- ``type`` = ``limit_exceeded``; ``id`` is stable (the same id if it is ever re-published);
- ``user_id`` = the limited user (the instance owner, or the API caller for ``maxApiCalls``);
- ``instance_id`` = the instance whose event crossed the limit (``None`` for ``maxApiCalls``,
  which batches count per user);
- ``data`` = :class:`~wa_common.schemas.events.LimitExceededData`: ``instanceId`` (as above),
  ``exceededLimits`` = ``[<the one limit>]``, ``usage`` = ``{"messagesSent": n, "apiCalls": n}``
  (the user's usage of that UTC day at the time of the crossing);
- ``meta`` = :class:`LimitExceededMeta`: ``limit`` (the limit's name), ``max`` (the maximum),
  ``periodStart`` (ISO 8601 UTC), ``resetsAt`` (ISO 8601 UTC of the next day's 00:00, after which
  the limit no longer applies; ``None`` for ``maxInstances``, which lasts until an instance is
  deleted).

Gateway side: on a ``limit_exceeded`` event, refuse the limited action of ``user_id`` with 429
and a message naming the limit (``maxMessagesSent``: sends; ``maxApiCalls``: every API call of that
user) until ``resetsAt``; then the block lapses by itself (there is no "cleared" event). A gateway
replica that starts later (or reconnects) loads the blocks in force with :data:`STATS_LIMITS_STATE`
(no ``userId`` = every user). After :data:`STATS_LIMITS_SET` it should replace that user's blocks
with the ``state`` in the reply (raising a limit lifts a block at once). For ``maxInstances`` the
gateway should ask :data:`STATS_LIMITS_STATE` before creating an instance (rare operation).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field
from pydantic.alias_generators import to_snake

from wa_common.schemas.status import LimitName
from wa_common.schemas.wire import ApiModel, UtcDateTime

# --- Query names -----------------------------------------------------------------------------

STATS_USER = "stats.user"
"""Usage of one user. Payload :class:`UserStatsQuery`; reply :class:`UserStats`.
A user gets their own statistics; an admin may name another user with ``userId``."""

STATS_INSTANCE = "stats.instance"
"""Usage of one instance. ``Query.instance_id`` (or payload ``instanceId``) names it. Payload
:class:`InstanceStatsQuery`; reply :class:`InstanceStats`. 404 unless the instance is the
caller's (admins see all)."""

STATS_SYSTEM = "stats.system"
"""Whole-system statistics (admin only, 403 otherwise). Payload :class:`SystemStatsQuery`;
reply :class:`SystemStats`."""

STATS_LIMITS_GET = "stats.limits.get"
"""Limits of a user. Payload :class:`LimitsQuery` (``userId`` defaults to the caller; only an
admin may name another user, 403 otherwise); reply :class:`UserLimits`."""

STATS_LIMITS_SET = "stats.limits.set"
"""Set a user's limits (admin only, 403 otherwise; for ``PUT /api/users/{id}/limits``).
Payload :class:`SetLimitsQuery`: every field is replaced (omitted/``null`` = unlimited).
Reply :class:`UserLimits` including ``state`` (the user's blocks in force under the new limits)."""

STATS_LIMITS_STATE = "stats.limits_state"
"""Limits currently blocking. Payload :class:`LimitsStateQuery`: with ``userId`` that user's blocks
(a user may ask only for themselves), without it every user's blocks (admin/internal only).
Reply :class:`LimitsState`."""

UserPeriod = Literal["today", "week", "month", "year", "all"]
InstancePeriod = Literal["today", "week", "month", "all"]
SystemPeriod = UserPeriod
USER_PERIODS: tuple[str, ...] = get_args(UserPeriod)
INSTANCE_PERIODS: tuple[str, ...] = get_args(InstancePeriod)
SYSTEM_PERIODS: tuple[str, ...] = USER_PERIODS


# --- Query payloads (period strings are validated by the stats service: 400 on a bad one) ------


class UserStatsQuery(ApiModel):
    period: str = "month"
    user_id: str | None = Field(None, description="admin only; default: the caller")


class InstanceStatsQuery(ApiModel):
    period: str = "today"
    instance_id: str | None = Field(None, description="or Query.instance_id")


class SystemStatsQuery(ApiModel):
    period: str = "all"


class LimitsQuery(ApiModel):
    user_id: str | None = None


# Largest value of a usage limit (10^12): far above any real use, inside every store's integer.
MAX_LIMIT = 10**12


class Limits(ApiModel):
    """A user's limits; ``None`` means unlimited. Counts are integers from 0 to :data:`MAX_LIMIT`.
    The wire name of each field is its :class:`LimitName`."""

    max_messages_sent: int | None = Field(None, ge=0, le=MAX_LIMIT, description="per UTC day")
    max_api_calls: int | None = Field(None, ge=0, le=MAX_LIMIT, description="per UTC day")
    max_instances: int | None = Field(None, ge=0, le=MAX_LIMIT, description="at the same time")

    def maximum(self, name: LimitName) -> int | None:
        """The maximum of limit ``name`` (``None``: unlimited)."""
        value: int | None = getattr(self, to_snake(name))
        return value


class SetLimitsQuery(ApiModel):
    user_id: str
    limits: Limits


class LimitsStateQuery(ApiModel):
    user_id: str | None = None


# --- Replies -----------------------------------------------------------------------------------


class UsageCounters(ApiModel):
    """Counters over a period. ``totalMediaSize`` is in bytes (media sent + received)."""

    messages_sent: int = 0
    messages_received: int = 0
    media_sent: int = 0
    media_received: int = 0
    total_media_size: int = Field(0, description="bytes")
    api_calls: int = 0
    webhook_sent: int = 0


class UserStatsTotal(UsageCounters):
    """All the user's usage in the period (API calls not tied to an instance included) and the
    number of instances the user owns now."""

    instance_count: int = 0


class UserStatsInstance(UsageCounters):
    instance_id: str
    name: str


class UserStats(ApiModel):
    """Reply of ``stats.user`` (= body of ``GET /api/stats/user``): ``total`` and one row per
    instance the user owns now or that has usage in the period."""

    total: UserStatsTotal
    instances: list[UserStatsInstance]


class DailyStat(ApiModel):
    date: UtcDateTime = Field(description="UTC midnight of the day, e.g. 2023-01-01T00:00:00.000Z")
    messages_sent: int = 0
    messages_received: int = 0
    media_sent: int = 0
    media_received: int = 0


class InstanceUsage(UsageCounters):
    daily_stats: list[DailyStat] = Field(default_factory=list, description="days with usage, oldest first")


class InstanceStats(ApiModel):
    """Reply of ``stats.instance`` (= body of ``GET /api/stats/instances/{id}``)."""

    usage: InstanceUsage


class CountActive(ApiModel):
    total: int = 0
    active: int = 0


class SystemStats(ApiModel):
    """Reply of ``stats.system`` (= body of ``GET /api/stats/system``).

    ``instances.total``: instances that exist (created, not deleted); ``instances.active``: those
    connected now (last ``connected``/``disconnected`` event). ``users.total``: users that exist
    (from auth's ``user.*`` events); ``users.active``: those with ``active`` true. ``usage``: the
    whole system's counters over the period (default ``all``).
    """

    instances: CountActive
    users: CountActive
    usage: UsageCounters


class BlockedLimit(ApiModel):
    user_id: str
    limit: LimitName
    max: int
    usage: int = Field(description="the day's usage (maxInstances: instances owned now)")
    resets_at: UtcDateTime | None = Field(description="the next UTC day's start; None for maxInstances")


class LimitsState(ApiModel):
    """Reply of ``stats.limits_state``: the blocks in force now.

    Daily limits block while today's usage is at or above the maximum (as announced by the
    ``limit_exceeded`` event); ``maxInstances`` blocks creating instances while the user owns at
    least ``maxInstances``. Empty list = nothing blocked.
    """

    blocked: list[BlockedLimit]


class UserLimits(ApiModel):
    """Reply of ``stats.limits.get`` / ``stats.limits.set``."""

    user_id: str
    limits: Limits
    state: list[BlockedLimit] = Field(default_factory=list, description="blocks in force now")


class LimitExceededMeta(ApiModel):
    """``meta`` of a ``limit_exceeded`` event (internal; not sent to webhook receivers)."""

    limit: LimitName
    max: int
    period_start: UtcDateTime | None = None
    resets_at: UtcDateTime | None = Field(None, description="None = no reset")
