"""Bus consumers of the session worker: shard commands, queries, user events.

Thin glue: parse the message, hand it to :class:`~wa_session_worker.service.core.WorkerService`,
reply. Outcomes of a command or query:

- malformed (not a request at all): answered 400 when it asks for a reply, then dead-lettered
  (:class:`Reject`), since it is a sender's bug worth keeping;
- refused input (the worker's edge check, a handler's validation, or a store that cannot hold a
  value: :func:`~wa_session_worker.failures.is_data_error`): answered 400 and acked;
  sending the same data again would fail the same way, so it is never retried;
- the store unreachable (:func:`~wa_session_worker.failures.is_store_unavailable`):
  raised, so the bus redelivers the message;
- any other failure: answered 500, so the caller never waits for its deadline.

Logs never carry a request's values nor exception messages (a driver error quotes the value it
could not store, which may be a webhook secret): only exception types, SQLSTATE codes and frames.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from wa_common.bus import QUERY_QUEUE, SERVICE_QUEUES, Consumer, Delivery, Reject, send_reply
from wa_common.bus.client import Handler
from wa_common.logs import describe_exception, exception_fields, get_logger
from wa_common.schemas import Command, Event, Query, Reply
from wa_common.schemas.events import EventType, UserEventData
from wa_session_worker.failures import data_error_message, is_data_error, is_store_unavailable
from wa_session_worker.service.core import WorkerService

log = get_logger(__name__)

RequestKind = type[Command] | type[Query]


class StoreUnavailable(RuntimeError):
    """The store failed while handling a request; the bus redelivers it. The message names the
    failure's types and SQLSTATE only (``describe_exception``), never the driver's text."""


def _parse(kind: RequestKind, body: bytes) -> Command | Query:
    """The request in ``body``; raises ``ValidationError`` when it is none.

    pydantic's JSON parser refuses a lone surrogate escape (``"\\ud800"``), valid JSON that the
    standard library reads: such a request is parsed that way, so the edge check answers 400
    naming the field instead of the whole message being dead-lettered unanswered.
    """
    try:
        return kind.from_bytes(body)
    except ValidationError as exc:
        first = exc
    try:
        return kind.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):
        raise first from None


def _short(value: str | None) -> str | None:
    return value[:64] if value is not None else None


async def _answer(service: WorkerService, delivery: Delivery, reply: Reply) -> None:
    try:
        reply.to_bytes()
    except PydanticSerializationError:
        # Text that cannot be encoded (an unpaired surrogate stored before the edge check).
        reply = Reply.failure(500, "the answer contains text that cannot be encoded")
    await send_reply(service.bus, delivery, reply)


def _request_handler(
    service: WorkerService,
    kind: RequestKind,
    handle: Callable[[Any], Awaitable[Reply | None]],
) -> Handler:
    """Parse a command or query, run ``handle``, reply (outcomes: see the module docstring)."""
    label = kind.__name__.lower()

    async def on_request(delivery: Delivery) -> None:
        try:
            request = _parse(kind, delivery.body)
        except ValidationError as exc:
            try:
                await send_reply(service.bus, delivery, Reply.failure(400, f"malformed {label}"))
            except Exception as reply_exc:
                log.warning(f"malformed {label} not answered", error=type(reply_exc).__name__)
            raise Reject(f"malformed {label}: {exc.error_count()} errors") from None
        try:
            reply = await handle(request)
        except Exception as exc:
            where = {"name": _short(request.name), "instance_id": _short(request.instance_id)}
            if is_data_error(exc):
                log.warning(
                    f"{label} refused: the store cannot hold its data", **where, **exception_fields(exc)
                )
                reply = Reply.failure(400, f"Invalid request: {data_error_message(exc)}")
            elif is_store_unavailable(exc):
                log.warning(f"{label} postponed: the store failed", **where, error=describe_exception(exc))
                raise StoreUnavailable(describe_exception(exc)) from None
            else:
                log.error(f"{label} failed", **where, **exception_fields(exc))
                reply = Reply.failure(500, f"internal error while handling {_short(request.name)}")
        if reply is not None:
            await _answer(service, delivery, reply)

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
