"""How each event type is counted, in two steps:

- ``read`` (pure, before any store access): the event's typed data, or :class:`MalformedEvent`
  when the event can never be counted (its data is not its model, or an id it needs is missing);
- ``apply`` (inside the window's transaction, in event order): counters are added to the
  window's :class:`~wa_stats.tally.Tally` (written once per row when the window ends), replicas
  of instances and users are written at once, ``maxInstances`` is checked at once.

``lookups`` names the instances whose replica ``apply`` reads (owners), so that the window reads
them all in one query first.

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

Counters go to the UTC day of the event's ``occurred_at`` (API calls: the batch's ``day``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from wa_common.schemas import Event, EventType
from wa_common.schemas.events import (
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
from wa_common.schemas.wire import iso_ms
from wa_stats.limits import LimitKeeper
from wa_stats.periods import utc_day
from wa_stats.repository import StatsRepository
from wa_stats.usage_batch import Screening, attributed, screen
from wa_stats.window import Window

# Longest instance name kept (the store's column); longer names are cut.
MAX_NAME_LENGTH = 255

D = TypeVar("D")
M = TypeVar("M", bound=BaseModel)


class MalformedEvent(ValueError):
    """An event that can never be counted (its consumer dead-letters it at once)."""


class AboutInstance(Protocol):
    @property
    def instance_id(self) -> str: ...


def _no_lookups(event: Event, data: Any) -> Iterable[str]:
    return ()


def _owner_lookup(event: Event, data: AboutInstance) -> Iterable[str]:
    """The event's instance, when its owner is needed (the event names no user)."""
    return () if event.user_id else (event.instance_id or data.instance_id,)


@dataclass(frozen=True)
class Handler(Generic[D]):
    """How one event type is counted (see the module docstring)."""

    read: Callable[[Event], D]
    apply: Callable[[Window, Event, D], Awaitable[None]]
    lookups: Callable[[Event, D], Iterable[str]] = _no_lookups


def _model(model: type[M], check: Callable[[Event, M], object] | None = None) -> Callable[[Event], M]:
    """A ``read``: ``Event.data`` as ``model``, then ``check`` (which may raise
    :class:`MalformedEvent`)."""

    def read(event: Event) -> M:
        try:
            data = model.model_validate(event.data)
        except ValidationError as exc:
            raise MalformedEvent(f"{event.type} data: {exc.error_count()} validation errors") from None
        if check is not None:
            check(event, data)
        return data

    return read


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


# --- checks of ``read`` ---------------------------------------------------------------------------


def _snapshot_ids(event: Event, data: InstanceSnapshot) -> tuple[str, str]:
    instance_id, user_id = event.instance_id or data.instance_id, data.user_id or event.user_id or ""
    if not instance_id or not user_id:
        raise MalformedEvent(f"{event.type} without instanceId/userId")
    return instance_id, user_id


def _deleted_check(event: Event, data: InstanceDeletedData) -> None:
    if not (event.instance_id or data.instance_id):
        raise MalformedEvent("instance.deleted without instanceId")


def _connection_check(event: Event, data: ConnectedData | DisconnectedData) -> None:
    if not (event.instance_id or data.instance_id):
        raise MalformedEvent(f"{event.type} without instance id")


def _user_check(event: Event, data: UserEventData) -> None:
    if not (data.user_id or event.user_id):
        raise MalformedEvent(f"{event.type} without userId")


class EventHandlers:
    """The handlers of every counted event type (:attr:`by_type`), over the store and limits."""

    def __init__(self, repo: StatsRepository, limits: LimitKeeper) -> None:
        self.repo = repo
        self.limits = limits
        self.by_type: dict[str, Handler[Any]] = {
            EventType.MESSAGE_SENT: Handler(_model(MessageSentData), self._message_sent, _owner_lookup),
            EventType.MESSAGE_RECEIVED: Handler(
                _model(MessageReceivedData), self._message_received, _owner_lookup
            ),
            EventType.API_USAGE: Handler(screen, self._api_usage, _named_instances),
            EventType.WEBHOOK_DELIVERED: Handler(
                _model(WebhookDeliveredData), self._webhook_delivered, _owner_lookup
            ),
            EventType.INSTANCE_CREATED: Handler(
                _model(InstanceSnapshot, _snapshot_ids), self._instance_created
            ),
            EventType.INSTANCE_UPDATED: Handler(
                _model(InstanceSnapshot, _snapshot_ids), self._instance_updated
            ),
            EventType.INSTANCE_DELETED: Handler(
                _model(InstanceDeletedData, _deleted_check), self._instance_deleted
            ),
            EventType.CONNECTED: Handler(
                _model(ConnectedData, _connection_check), self._connected, _owner_lookup
            ),
            EventType.DISCONNECTED: Handler(
                _model(DisconnectedData, _connection_check), self._disconnected, _owner_lookup
            ),
            EventType.USER_CREATED: Handler(_model(UserEventData, _user_check), self._user_changed),
            EventType.USER_UPDATED: Handler(_model(UserEventData, _user_check), self._user_changed),
            EventType.USER_DELETED: Handler(_model(UserEventData, _user_check), self._user_deleted),
        }

    async def _owner(self, window: Window, event: Event, instance_id: str) -> str:
        """The user an event counts for: the event's, else the instance's known owner, else none."""
        if event.user_id:
            return event.user_id
        info = (await window.instances([instance_id])).get(instance_id)
        return info.user_id if info is not None else ""

    # --- messages, API calls, webhooks ----------------------------------------------------------

    async def _message_sent(self, window: Window, event: Event, data: MessageSentData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = await self._message(window, event, instance_id, data.has_media, "sent")
        if user_id:
            day = utc_day(event.occurred_at)
            window.tally.add_daily(user_id, day, LimitName.MAX_MESSAGES_SENT, 1, instance_id)

    async def _message_received(self, window: Window, event: Event, data: MessageReceivedData) -> None:
        await self._message(window, event, event.instance_id or data.instance_id, data.has_media, "received")

    async def _message(
        self,
        window: Window,
        event: Event,
        instance_id: str,
        has_media: bool,
        way: Literal["sent", "received"],
    ) -> str:
        """Count one message ``sent`` or ``received``; returns the user it counted for."""
        user_id = await self._owner(window, event, instance_id)
        deltas = {
            f"messages_{way}": 1,
            f"media_{way}": int(has_media),
            "total_media_size": _non_negative_int(event.meta.get("mediaSize")),
        }
        window.tally.add_usage(user_id, instance_id, utc_day(event.occurred_at), deltas)
        return user_id

    async def _api_usage(self, window: Window, event: Event, screening: Screening) -> None:
        screening.report(event)
        batch = screening.batch
        known = await window.instances(item.instance_id or "" for item in batch.counts)
        per_row: dict[tuple[str, str], int] = defaultdict(int)
        per_user: dict[str, int] = defaultdict(int)
        for item in attributed(event, batch, known):
            per_row[(item.user_id, item.instance_id or "")] += item.count
            per_user[item.user_id] += item.count
        day = date.fromisoformat(batch.day)  # screened: always a date
        for (user_id, instance_id), count in sorted(per_row.items()):
            window.tally.add_usage(user_id, instance_id, day, {"api_calls": count})
        for user_id, count in sorted(per_user.items()):
            window.tally.add_daily(user_id, day, LimitName.MAX_API_CALLS, count, "")

    async def _webhook_delivered(self, window: Window, event: Event, data: WebhookDeliveredData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = await self._owner(window, event, instance_id)
        window.tally.add_usage(user_id, instance_id, utc_day(event.occurred_at), {"webhook_sent": 1})

    # --- instances ------------------------------------------------------------------------------

    async def _instance_created(self, window: Window, event: Event, data: InstanceSnapshot) -> None:
        instance_id, user_id = await self._snapshot(window, event, data)
        await self.limits.check_instances(window.unit, user_id, instance_id)

    async def _instance_updated(self, window: Window, event: Event, data: InstanceSnapshot) -> None:
        await self._snapshot(window, event, data)

    async def _snapshot(self, window: Window, event: Event, data: InstanceSnapshot) -> tuple[str, str]:
        """Keep the instance's owner and name (storable text, cut to :data:`MAX_NAME_LENGTH`)."""
        instance_id, user_id = _snapshot_ids(event, data)
        snapshot_at = data.updated_at or iso_ms(event.occurred_at)
        name = storable(data.name, MAX_NAME_LENGTH)
        await self.repo.replicas.upsert_instance(window.conn, instance_id, user_id, name, snapshot_at)
        window.changed(instance_id)
        return instance_id, user_id

    async def _instance_deleted(self, window: Window, event: Event, data: InstanceDeletedData) -> None:
        instance_id = event.instance_id or data.instance_id
        user_id = data.user_id or event.user_id or ""
        await self.repo.replicas.delete_instance(window.conn, instance_id, user_id)
        window.changed(instance_id)
        if user_id:
            await self.limits.instance_deleted(window.unit, user_id)

    async def _connected(self, window: Window, event: Event, data: ConnectedData) -> None:
        await self._connection(window, event, event.instance_id or data.instance_id, connected=True)

    async def _disconnected(self, window: Window, event: Event, data: DisconnectedData) -> None:
        await self._connection(window, event, event.instance_id or data.instance_id, connected=False)

    async def _connection(self, window: Window, event: Event, instance_id: str, *, connected: bool) -> None:
        user_id = await self._owner(window, event, instance_id)
        await self.repo.replicas.set_connected(
            window.conn, instance_id, user_id, connected, event.occurred_at
        )
        window.changed(instance_id)

    # --- users ----------------------------------------------------------------------------------

    async def _user_changed(self, window: Window, event: Event, data: UserEventData) -> None:
        await self._user(window, event, data, deleted=False)

    async def _user_deleted(self, window: Window, event: Event, data: UserEventData) -> None:
        await self._user(window, event, data, deleted=True)

    async def _user(self, window: Window, event: Event, data: UserEventData, *, deleted: bool) -> None:
        user_id = data.user_id or event.user_id or ""
        active = data.active and not deleted
        await self.repo.replicas.upsert_user(
            window.conn, user_id, active=active, role=data.role, deleted=deleted, at=event.occurred_at
        )


def _named_instances(event: Event, screening: Screening) -> Iterable[str]:
    """The instances a usage batch names (their owners decide the calls' attribution)."""
    return (item.instance_id for item in screening.batch.counts if item.instance_id)
