"""Bus consumers of the session worker: shard commands, queries, user events.

Thin glue: parse the message, hand it to :class:`~wa_session_worker.service.core.WorkerService`,
reply. A malformed message is dead-lettered (:class:`Reject`); an unexpected failure is answered
with 500 so the caller never waits for its deadline; a failing store raises (redelivery).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from wa_common.bus import QUERY_QUEUE, SERVICE_QUEUES, Consumer, Delivery, Reject, send_reply
from wa_common.bus.client import Handler
from wa_common.logs import get_logger
from wa_common.schemas import Command, Event, Query, Reply
from wa_common.schemas.events import EventType, UserEventData
from wa_session_worker.service.core import WorkerService

log = get_logger(__name__)


def _store_failure(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError | OSError | TimeoutError):
        return True
    try:
        from pymongo.errors import ConnectionFailure

        return isinstance(exc, ConnectionFailure)
    except ImportError:  # pragma: no cover
        return False


def _request_handler(
    service: WorkerService,
    kind: type[Command] | type[Query],
    handle: Callable[[Any], Awaitable[Reply | None]],
) -> Handler:
    """Parse a command or query (malformed: dead-lettered), run ``handle``, reply. A store
    failure is raised (the message is redelivered); any other error answers 500."""
    label = kind.__name__.lower()

    async def on_request(delivery: Delivery) -> None:
        try:
            request = kind.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed {label}: {exc.error_count()} errors") from exc
        try:
            reply = await handle(request)
        except Exception as exc:
            if _store_failure(exc):
                raise
            log.exception(f"{label} failed", name=request.name, instance_id=request.instance_id)
            reply = Reply.failure(500, f"internal error while handling {request.name}")
        if reply is not None:
            await send_reply(service.bus, delivery, reply)

    return on_request


def command_handler(service: WorkerService) -> Handler:
    return _request_handler(service, Command, service.handle_command)


def query_handler(service: WorkerService) -> Handler:
    return _request_handler(service, Query, service.handle_query)


def user_event_handler(service: WorkerService) -> Handler:
    async def on_event(delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject("malformed event") from exc
        if event.type != EventType.USER_DELETED:
            return
        try:
            data = UserEventData.model_validate(event.data)
        except ValidationError as exc:
            raise Reject("malformed user.deleted data") from exc
        await service.delete_user_instances(data.user_id)

    return on_event


async def start_consumers(service: WorkerService) -> list[Consumer]:
    """Consume queries and user events (shard queues are consumed per held lease)."""
    service.command_handler = command_handler(service)
    return [
        await service.bus.consume(QUERY_QUEUE, query_handler(service)),
        await service.bus.consume(SERVICE_QUEUES["session-worker"], user_event_handler(service)),
    ]
