"""Bus consumers of the session worker: the commands of owned shards, queries, user events.

Commands and queries are answered by two :class:`~wa_common.bus.router.Router`\\ s built from the
service modules' handlers: each request name with its payload model and its reply model (the
body a handler returns; the router checks it is that model and answers it 200, while a
:class:`Reply` a handler returns is sent as it is: 201, 202, a repeated send's first reply), the
worker's edge check (:func:`~wa_session_worker.service.guard.check_request`) as the guard, and,
for commands, per-instance order (:func:`in_turn`, the router's ``around``: one command at a time
per instance, except that sends overlap their store writes). Outcomes:

- malformed (not a request at all): answered 400 when it asks for a reply, dead-lettered when
  nobody waits for one (the router);
- a handler's :class:`~wa_common.bus.router.RequestError` (its views' parsers, access checks,
  media): answered with its status by the router;
- refused input (the edge check, a payload model, or a store that cannot hold a value:
  :func:`~wa_session_worker.failures.is_data_error`): answered 400 and acked; sending the same
  data again would fail the same way, so it is never retried;
- an engine failure (:class:`EngineError`): answered with its status (409 not connected...);
- the store unreachable (:func:`~wa_session_worker.failures.is_store_unavailable`): raised, so
  the bus redelivers the message;
- any other failure: answered 500, so the caller never waits for its deadline.

The worker's metrics keep their names: ``wa_worker_commands_total{name, outcome}`` and
``wa_worker_command_duration_seconds{name}`` (the send path adds the outcome ``duplicate``).

Logs never carry a request's values nor exception messages (a driver error quotes the value it
could not store, which may be a webhook secret): only exception types, SQLSTATE codes and frames.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from wa_common.bus import QUERY_QUEUE, SERVICE_QUEUES, Bus, Consumer, Delivery, Reject
from wa_common.bus.client import Handler
from wa_common.bus.router import OnError, Router
from wa_common.logs import describe_exception, exception_fields, get_logger
from wa_common.schemas import Command, Event, Query, Reply, Request
from wa_common.schemas.cluster import ClusterWorkers, StoreStatus
from wa_common.schemas.contacts import (
    AddContactResult,
    DbContact,
    DbContactsPage,
    ImportResult,
    WhatsappContacts,
)
from wa_common.schemas.events import EventType, UserEventData
from wa_common.schemas.instances import (
    ActivityPage,
    EventsPage,
    Instance,
    InstanceDetail,
    InstanceList,
    InstanceState,
    InstanceUpdated,
    PairingCode,
    QrCode,
    SuccessMessage,
)
from wa_common.schemas.messages import ChatMessagesPage, MessageId
from wa_common.schemas.session import (
    ActivityQuery,
    AddContact,
    ChatMessagesQuery,
    ContactsQuery,
    CreateInstance,
    EventsQuery,
    ListInstances,
    PairPhone,
    SaveContact,
    SendMedia,
    SendText,
    UpdateInstance,
)
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker.engines.base import EngineError
from wa_session_worker.failures import data_error_message, is_data_error, is_store_unavailable
from wa_session_worker.metrics import COMMAND_SECONDS, COMMANDS
from wa_session_worker.service import guard
from wa_session_worker.service.admin import Admin
from wa_session_worker.service.contacts import Contacts
from wa_session_worker.service.instances import Instances
from wa_session_worker.service.messaging import Messaging
from wa_session_worker.service.queries import Queries
from wa_session_worker.service.turns import CURRENT_TURN, InstanceTurns

log = get_logger(__name__)

SERVICE = "session-worker"


class StoreUnavailable(RuntimeError):
    """The store failed while handling a request; the bus redelivers it. The message names the
    failure's types and SQLSTATE only (``describe_exception``), never the driver's text."""


OWN_TURN = frozenset({C.SEND_TEXT, C.SEND_MEDIA})
"""Commands that wait for their instance's turn themselves, around their engine step only."""


def in_turn(turns: InstanceTurns) -> Callable[[Request, Callable[[], Awaitable[Reply]]], Awaitable[Reply]]:
    """The commands router's wrapper: 400 without an instance id; else the command takes its
    instance's turn on arrival (:mod:`~wa_session_worker.service.turns`) and runs in it, except
    sends, which wait for it around their engine step (:data:`OWN_TURN`)."""

    async def around(request: Request, run: Callable[[], Awaitable[Reply]]) -> Reply:
        if not request.instance_id:
            return Reply.failure(400, "instance id is required")
        turn = turns.take(request.instance_id)
        token = CURRENT_TURN.set(turn)
        try:
            if request.name not in OWN_TURN:
                await turn.wait()
            return await run()
        finally:
            turn.end()
            CURRENT_TURN.reset(token)

    return around


def _short(value: str | None) -> str | None:
    return value[:64] if value is not None else None


def failure_mapping(kind: str) -> OnError:
    """The routers' ``on_error`` (``kind``: ``command`` or ``query``, for the logs): see the
    module docstring."""

    def on_error(request: Request, exc: Exception) -> Reply:
        if isinstance(exc, EngineError):
            return Reply.failure(exc.status, str(exc))
        where = {"name": _short(request.name), "instance_id": _short(request.instance_id)}
        if is_data_error(exc):
            log.warning(f"{kind} refused: the store cannot hold its data", **where, **exception_fields(exc))
            return Reply.failure(400, f"Invalid request: {data_error_message(exc)}")
        if is_store_unavailable(exc):
            log.warning(f"{kind} postponed: the store failed", **where, error=describe_exception(exc))
            raise StoreUnavailable(describe_exception(exc)) from None
        log.error(f"{kind} failed", **where, **exception_fields(exc))
        return Reply.failure(500, f"internal error while handling {_short(request.name)}")

    return on_error


def commands_router(
    instances: Instances, messaging: Messaging, contacts: Contacts, turns: InstanceTurns
) -> Router:
    """The commands of an instance's shard (consumed from ``wa.shard.<k>`` while owned)."""
    router = Router(
        SERVICE,
        kind=Command,
        guard=guard.check_request,
        around=in_turn(turns),
        on_error=failure_mapping("command"),
        requests=COMMANDS,
        seconds=COMMAND_SECONDS,
    )
    router.add(C.CREATE_INSTANCE, instances.create, payload=CreateInstance, reply=Instance)
    router.add(C.UPDATE_INSTANCE, instances.update, payload=UpdateInstance, reply=InstanceUpdated)
    router.add(C.DELETE_INSTANCE, instances.delete, reply=SuccessMessage)
    router.add(C.RECONNECT, instances.reconnect, reply=SuccessMessage)
    router.add(C.LOGOUT, instances.logout, reply=SuccessMessage)
    router.add(C.PAIR_PHONE, instances.pair_phone, payload=PairPhone, reply=PairingCode)
    router.add(C.SEND_TEXT, messaging.send, payload=SendText, reply=MessageId)
    router.add(C.SEND_MEDIA, messaging.send, payload=SendMedia, reply=MessageId)
    router.add(C.FETCH_CONTACTS, contacts.fetch, reply=WhatsappContacts)
    router.add(C.ADD_CONTACT, contacts.add, payload=AddContact, reply=AddContactResult)
    router.add(C.IMPORT_CONTACTS, contacts.import_all, reply=ImportResult)
    router.add(C.SAVE_CONTACT, contacts.save, payload=SaveContact, reply=DbContact)
    return router


def queries_router(queries: Queries, admin: Admin) -> Router:
    """The queries any worker answers (competing consumers on ``wa.queries``)."""
    router = Router(
        SERVICE,
        kind=Query,
        guard=guard.check_request,
        on_error=failure_mapping("query"),
        requests=COMMANDS,
        seconds=COMMAND_SECONDS,
    )
    router.add(Q.GET_INSTANCE, queries.get_instance, reply=InstanceDetail)
    router.add(Q.LIST_INSTANCES, queries.list_instances, payload=ListInstances, reply=InstanceList)
    router.add(Q.STATUS, queries.status, reply=InstanceState)
    router.add(Q.QR, queries.qr, reply=QrCode)  # 200; the 202 (QrGenerating) is a Reply
    router.add(Q.ACTIVITY, queries.activity, payload=ActivityQuery, reply=ActivityPage)
    router.add(Q.EVENTS, queries.events, payload=EventsQuery, reply=EventsPage)
    router.add(Q.CONTACTS_DB, queries.contacts, payload=ContactsQuery, reply=DbContactsPage)
    router.add(Q.CHAT_MESSAGES, queries.chat_messages, payload=ChatMessagesQuery, reply=ChatMessagesPage)
    router.add(Q.CLUSTER, admin.cluster, reply=ClusterWorkers)
    router.add(Q.STORE_STATUS, admin.store_status, reply=StoreStatus)
    return router


def user_event_handler(admin: Admin) -> Handler:
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
        await admin.delete_user_instances(data.user_id)

    return on_event


async def start_consumers(bus: Bus, queries: Router, admin: Admin) -> list[Consumer]:
    """Consume queries and user events (shard queues are consumed per held lease)."""
    return [
        await bus.consume(QUERY_QUEUE, queries.consumer(bus)),
        await bus.consume(SERVICE_QUEUES["session-worker"], user_event_handler(admin)),
    ]
