"""Bus consumers of the stats service: every event (``wa.events.stats``) and the stats queries
(``wa.queries.stats``), answered by the shared request router. Thin: decoding, who may ask what,
acknowledgement; counting in :mod:`wa_stats.counting`, answers in :mod:`wa_stats.queries`.

Access: a query with ``caller=None`` is an internal call (treated as an admin); a user reads
only their own statistics and limits (403 for another user's, 404 for another user's instance);
``stats.system``, ``stats.limits.set``, every user's ``stats.limits_state`` and ``store.status``
are for administrators.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from wa_common.bus import SERVICE_QUEUES, STATS_QUERY_QUEUE, Bus, Consumer, Delivery, Reject
from wa_common.bus.router import RequestError, Router
from wa_common.db import store_status
from wa_common.ids import is_id
from wa_common.logs import exception_fields, get_logger
from wa_common.schemas import Caller, Event, Query, Reply, Request, stats
from wa_common.schemas.session import SessionQuery
from wa_stats.counting import MAX_WINDOW, Counting, MalformedEvent
from wa_stats.queries import StatsQueries

log = get_logger(__name__)


def _caller_guard(request: Request) -> Reply | None:
    """Refuse (400) a caller whose user id is not an id: it would reach the store."""
    if request.caller is not None and not is_id(request.caller.user_id):
        return Reply.failure(400, "the caller's user id is not a valid user id")
    return None


def _unavailable(request: Request, exc: Exception) -> Reply:
    log.error("stats query failed", query=request.name[:64], **exception_fields(exc))
    return Reply.failure(500, "statistics are unavailable right now")


def _admin(caller: Caller | None, what: str = "") -> None:
    """Refuse (403) a user that is not an administrator (``None``: an internal call)."""
    if caller is not None and not caller.is_admin:
        raise RequestError(403, f"administrator rights required{what}")


def _user_id(user_id: str) -> str:
    """Refuse (400) a ``userId`` that is not an id: it is the caller's input, never stored."""
    if not is_id(user_id):
        raise RequestError(400, "userId is not a valid user id")
    return user_id


def _target_user(caller: Caller | None, requested: str | None, what: str) -> str:
    """The user a query is about: ``requested`` (admins/internal only) or the caller."""
    if requested is None:
        if caller is None:
            raise RequestError(400, "userId is required")
        return caller.user_id
    if caller is not None and not caller.is_admin and _user_id(requested) != caller.user_id:
        raise RequestError(403, f"only an administrator may read another user's {what}")
    return _user_id(requested)


def stats_router(queries: StatsQueries, *, database_url: str | None = None) -> Router:
    """The stats queries (names and shapes: :mod:`wa_common.schemas.stats`); ``store.status``
    too when ``database_url`` is given."""
    router = Router("stats", kind=Query, guard=_caller_guard, on_error=_unavailable)

    @router.route(stats.STATS_USER, payload=stats.UserStatsQuery, reply=stats.UserStats)
    async def user_stats(request: Request, body: stats.UserStatsQuery) -> stats.UserStats:
        return await queries.user_stats(_target_user(request.caller, body.user_id, "statistics"), body.period)

    @router.route(stats.STATS_INSTANCE, payload=stats.InstanceStatsQuery, reply=stats.InstanceStats)
    async def instance_stats(request: Request, body: stats.InstanceStatsQuery) -> stats.InstanceStats:
        instance_id = request.instance_id or body.instance_id
        if not instance_id:
            raise RequestError(400, "instance id is required")
        return await queries.instance_stats(request.caller, instance_id, body.period)

    @router.route(stats.STATS_SYSTEM, payload=stats.SystemStatsQuery, reply=stats.SystemStats)
    async def system_stats(request: Request, body: stats.SystemStatsQuery) -> stats.SystemStats:
        _admin(request.caller)
        return await queries.system_stats(body.period)

    @router.route(stats.STATS_LIMITS_GET, payload=stats.LimitsQuery, reply=stats.UserLimits)
    async def get_limits(request: Request, body: stats.LimitsQuery) -> stats.UserLimits:
        return await queries.get_limits(_target_user(request.caller, body.user_id, "limits"))

    @router.route(stats.STATS_LIMITS_SET, payload=stats.SetLimitsQuery, reply=stats.UserLimits)
    async def set_limits(request: Request, body: stats.SetLimitsQuery) -> stats.UserLimits:
        _admin(request.caller)
        return await queries.set_limits(_user_id(body.user_id), body.limits)

    @router.route(stats.STATS_LIMITS_STATE, payload=stats.LimitsStateQuery, reply=stats.LimitsState)
    async def limits_state(request: Request, body: stats.LimitsStateQuery) -> stats.LimitsState:
        if body.user_id is None:
            _admin(request.caller, " to list every user's limits")
            return await queries.limits_state(None)
        return await queries.limits_state(_target_user(request.caller, body.user_id, "limits"))

    if database_url is not None:
        url = database_url

        @router.route(SessionQuery.STORE_STATUS)
        async def store(request: Request) -> dict[str, Any]:
            _admin(request.caller)
            return store_status(url)

    return router


class StatsConsumers:
    """Starts and stops the two consumers of one stats process.

    ``event_prefetch`` is how many events the event consumer holds at once: each is a handler
    waiting for its window (:meth:`Counting.submit`), so it bounds how large a window grows.
    """

    def __init__(
        self, bus: Bus, counting: Counting, router: Router, *, event_prefetch: int = MAX_WINDOW
    ) -> None:
        self.bus = bus
        self.counting = counting
        self.router = router
        self.event_prefetch = event_prefetch
        self._consumers: list[Consumer] = []

    async def on_event(self, delivery: Delivery) -> None:
        """Count one event in the next window. Malformed → dead-lettered at once (alone); a store
        error fails its whole window → every delivery of it is redelivered."""
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed event: {exc.error_count()} validation errors") from exc
        try:
            await self.counting.submit(event)
        except MalformedEvent as exc:
            raise Reject(str(exc)) from exc

    async def start(self) -> None:
        events = await self.bus.consume(SERVICE_QUEUES["stats"], self.on_event, prefetch=self.event_prefetch)
        self._consumers.append(events)
        self._consumers.append(await self.bus.consume(STATS_QUERY_QUEUE, self.router.consumer(self.bus)))

    async def stop(self, timeout_s: float) -> None:
        """Stop deliveries and wait for in-flight handlers (before the store is closed)."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.cancel(timeout_s)
