"""Counting events: one handler per event type, each taking the event's typed data.

Sources:
- ``message_sent`` / ``message_received`` (session workers): ``messagesSent`` /
  ``messagesReceived``, ``mediaSent`` / ``mediaReceived`` when ``data.hasMedia`` is true,
  ``totalMediaSize`` += the event's ``meta.mediaSize`` (bytes);
- ``usage.api_calls`` (gateways): ``apiCalls`` per user, instance (or none) and the batch's
  ``day``, each item checked on its own (:mod:`wa_stats.usage_batch`);
- ``webhook.delivered`` (dispatcher): ``webhookSent``;
- ``instance.created/updated/deleted``, ``connected`` / ``disconnected``: owners, names, whether
  an instance exists and is connected; ``user.created/updated/deleted`` (auth): users and
  ``active``.

Every counted event is processed in one transaction that also records its id, so a redelivered
event changes nothing. Counters go to the UTC day of the event's ``occurred_at``. An event of a
counted type whose data is not its model (:mod:`wa_common.schemas.events`) is
:class:`MalformedEvent`: its consumer dead-letters it at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from wa_common.clock import Clock
from wa_common.logs import get_logger
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import (
    ApiUsageBatch,
    ConnectedData,
    DisconnectedData,
    InstanceDeletedData,
    InstanceSnapshot,
    MessageReceivedData,
    MessageSentData,
    UserEventData,
    WebhookDeliveredData,
)
from wa_common.schemas.status import LimitName
from wa_common.schemas.text import storable
from wa_common.schemas.wire import ApiModel, iso_ms
from wa_stats.limits import LimitKeeper, Unit
from wa_stats.metrics import DUPLICATES_SKIPPED, EVENT_LAG, EVENTS_PROCESSED, type_label
from wa_stats.periods import utc_day
from wa_stats.repository import StatsRepository
from wa_stats.usage_batch import attributed, screened

log = get_logger(__name__)

COUNTED = "counted"
DUPLICATE = "duplicate"
IGNORED = "ignored"

# Longest instance name kept (the store's column); longer names are cut.
MAX_NAME_LENGTH = 255

D = TypeVar("D", bound=ApiModel)


class MalformedEvent(ValueError):
    """An event that can never be counted (its consumer dead-letters it at once)."""


@dataclass(frozen=True)
class Handler(Generic[D]):
    """How one event type is counted: its data model (or ``decode``, which reads ``Event.data``
    into it), and ``apply``, which counts it inside the event's :class:`Unit`."""

    model: type[D]
    apply: Callable[[Unit, Event, D], Awaitable[None]]
    decode: Callable[[Event], D] | None = None

    async def __call__(self, unit: Unit, event: Event) -> None:
        if self.decode is not None:
            data = self.decode(event)
        else:
            try:
                data = self.model.model_validate(event.data)
            except ValidationError as exc:
                raise MalformedEvent(f"{event.type} data: {exc.error_count()} validation errors") from None
        await self.apply(unit, event, data)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


class Counting:
    """Counts events into the store; limits crossed on the way are left to ``limits``."""

    def __init__(self, repo: StatsRepository, limits: LimitKeeper, now: Clock) -> None:
        self.repo = repo
        self.limits = limits
        self.now = now
        self.handlers: dict[str, Handler[Any]] = {
            EventType.MESSAGE_SENT: Handler(MessageSentData, self._message_sent),
            EventType.MESSAGE_RECEIVED: Handler(MessageReceivedData, self._message_received),
            EventType.API_USAGE: Handler(ApiUsageBatch, self._api_usage, decode=screened),
            EventType.WEBHOOK_DELIVERED: Handler(WebhookDeliveredData, self._webhook_delivered),
            EventType.INSTANCE_CREATED: Handler(InstanceSnapshot, self._instance_created),
            EventType.INSTANCE_UPDATED: Handler(InstanceSnapshot, self._instance_updated),
            EventType.INSTANCE_DELETED: Handler(InstanceDeletedData, self._instance_deleted),
            EventType.CONNECTED: Handler(ConnectedData, self._connected),
            EventType.DISCONNECTED: Handler(DisconnectedData, self._disconnected),
            EventType.USER_CREATED: Handler(UserEventData, self._user_changed),
            EventType.USER_UPDATED: Handler(UserEventData, self._user_changed),
            EventType.USER_DELETED: Handler(UserEventData, self._user_deleted),
        }

    async def handle_event(self, event: Event) -> str:
        """Count ``event`` once; returns ``counted``, ``duplicate`` or ``ignored`` (other types).

        Raises :class:`MalformedEvent` for an event of a counted type whose data is unusable.
        Database errors propagate (the consumer returns the message to the queue).
        """
        label = type_label(event.type)
        now = self.now()
        EVENT_LAG.observe(max((now - event.occurred_at).total_seconds(), 0.0))
        handler = self.handlers.get(event.type)
        outcome = IGNORED
        if handler is not None:
            async with self.limits.unit(now) as unit:
                if await self.repo.usage.mark_processed(unit.conn, event.id, now):
                    await handler(unit, event)
                    outcome = COUNTED
                else:
                    outcome = DUPLICATE
        EVENTS_PROCESSED.labels(label).inc()
        if outcome == DUPLICATE:
            DUPLICATES_SKIPPED.labels(label).inc()
            log.info("duplicate event skipped", event_id=event.id, type=event.type)
        return outcome

    async def _owner(self, unit: Unit, event: Event, instance_id: str) -> str:
        """The user an event counts for: the event's, else the instance's known owner, else none."""
        if event.user_id:
            return event.user_id
        if instance_id:
            info = await self.repo.replicas.instance(unit.conn, instance_id)
            if info is not None:
                return info.user_id
        return ""

    # --- messages, API calls, webhooks ----------------------------------------------------------

    async def _message_sent(self, unit: Unit, event: Event, data: MessageSentData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = await self._message(unit, event, instance_id, data.has_media, "sent")
        if user_id:
            day = utc_day(event.occurred_at)
            messages, _ = await self.repo.usage.add_user_daily(unit.conn, user_id, day, messages_sent=1)
            await self.limits.check(unit, user_id, LimitName.MAX_MESSAGES_SENT, messages, day, instance_id)

    async def _message_received(self, unit: Unit, event: Event, data: MessageReceivedData) -> None:
        await self._message(unit, event, event.instance_id or data.instance_id, data.has_media, "received")

    async def _message(
        self, unit: Unit, event: Event, instance_id: str, has_media: bool, way: Literal["sent", "received"]
    ) -> str:
        """Count one message ``sent`` or ``received``; returns the user it counted for."""
        user_id = await self._owner(unit, event, instance_id)
        deltas = {
            f"messages_{way}": 1,
            f"media_{way}": int(has_media),
            "total_media_size": _non_negative_int(event.meta.get("mediaSize")),
        }
        await self.repo.usage.add_usage(unit.conn, user_id, instance_id, utc_day(event.occurred_at), deltas)
        return user_id

    async def _api_usage(self, unit: Unit, event: Event, batch: ApiUsageBatch) -> None:
        named = sorted({item.instance_id for item in batch.counts if item.instance_id})
        known = await self.repo.replicas.instances_named(unit.conn, named)
        per_row: dict[tuple[str, str], int] = defaultdict(int)
        per_user: dict[str, int] = defaultdict(int)
        for item in attributed(event, batch, known):
            per_row[(item.user_id, item.instance_id or "")] += item.count
            per_user[item.user_id] += item.count
        day = date.fromisoformat(batch.day)  # screened: always a date
        for (user_id, instance_id), count in sorted(per_row.items()):
            await self.repo.usage.add_usage(unit.conn, user_id, instance_id, day, {"api_calls": count})
        for user_id, count in sorted(per_user.items()):
            _, calls = await self.repo.usage.add_user_daily(unit.conn, user_id, day, api_calls=count)
            await self.limits.check(unit, user_id, LimitName.MAX_API_CALLS, calls, day, None)

    async def _webhook_delivered(self, unit: Unit, event: Event, data: WebhookDeliveredData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = await self._owner(unit, event, instance_id)
        day = utc_day(event.occurred_at)
        await self.repo.usage.add_usage(unit.conn, user_id, instance_id, day, {"webhook_sent": 1})

    # --- instances ------------------------------------------------------------------------------

    async def _instance_created(self, unit: Unit, event: Event, data: InstanceSnapshot) -> None:
        instance_id, user_id = await self._snapshot(unit, event, data)
        await self.limits.check_instances(unit, user_id, instance_id)

    async def _instance_updated(self, unit: Unit, event: Event, data: InstanceSnapshot) -> None:
        await self._snapshot(unit, event, data)

    async def _snapshot(self, unit: Unit, event: Event, data: InstanceSnapshot) -> tuple[str, str]:
        """Keep the instance's owner and name (storable text, cut to :data:`MAX_NAME_LENGTH`)."""
        instance_id = event.instance_id or data.instance_id
        user_id = data.user_id or event.user_id or ""
        if not instance_id or not user_id:
            raise MalformedEvent(f"{event.type} without instanceId/userId")
        snapshot_at = data.updated_at or iso_ms(event.occurred_at)
        name = storable(data.name, MAX_NAME_LENGTH)
        await self.repo.replicas.upsert_instance(unit.conn, instance_id, user_id, name, snapshot_at)
        return instance_id, user_id

    async def _instance_deleted(self, unit: Unit, event: Event, data: InstanceDeletedData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = data.user_id or event.user_id or ""
        if not instance_id:
            raise MalformedEvent("instance.deleted without instanceId")
        await self.repo.replicas.delete_instance(unit.conn, instance_id, user_id)
        if user_id:
            await self.limits.instance_deleted(unit, user_id)

    async def _connected(self, unit: Unit, event: Event, data: ConnectedData) -> None:
        await self._connection(unit, event, event.instance_id or data.instance_id, connected=True)

    async def _disconnected(self, unit: Unit, event: Event, data: DisconnectedData) -> None:
        await self._connection(unit, event, event.instance_id or data.instance_id, connected=False)

    async def _connection(self, unit: Unit, event: Event, instance_id: str, *, connected: bool) -> None:
        if not instance_id:
            raise MalformedEvent(f"{event.type} without instance id")
        user_id = await self._owner(unit, event, instance_id)
        await self.repo.replicas.set_connected(unit.conn, instance_id, user_id, connected, event.occurred_at)

    # --- users ----------------------------------------------------------------------------------

    async def _user_changed(self, unit: Unit, event: Event, data: UserEventData) -> None:
        await self._user(unit, event, data, deleted=False)

    async def _user_deleted(self, unit: Unit, event: Event, data: UserEventData) -> None:
        await self._user(unit, event, data, deleted=True)

    async def _user(self, unit: Unit, event: Event, data: UserEventData, *, deleted: bool) -> None:
        user_id = data.user_id or event.user_id or ""
        if not user_id:
            raise MalformedEvent(f"{event.type} without userId")
        active = data.active and not deleted
        await self.repo.replicas.upsert_user(
            unit.conn, user_id, active=active, role=data.role, deleted=deleted, at=event.occurred_at
        )
