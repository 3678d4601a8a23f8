"""The worker's bus consumers: the commands and queries routers (edge check, per-instance lock,
failure mapping, metrics), malformed requests.

Fast tests run the routers over the in-memory store (``parts``); the others the worker in
process over the real RabbitMQ (``ctx``)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from conftest import raw_bus_request
from wa_common.bus import QUERY_QUEUE, Bus, dead_letter_queue, shard_queue
from wa_common.bus.router import RequestError
from wa_common.clock import utcnow
from wa_common.ids import new_id
from wa_common.schemas import Command, Query, Reply
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker.consumers import StoreUnavailable, failure_mapping
from wa_session_worker.engines.base import SessionNotConnected

DEADLINE_S = 5.0


# --- the routers ---------------------------------------------------------------------------------


def test_failures_map_to_replies_or_a_redelivery() -> None:
    on_error = failure_mapping("command")
    request = Command(name=C.SEND_TEXT, instance_id="i")
    assert on_error(request, SessionNotConnected("i")).status == 409
    refused = on_error(request, IntegrityError("INSERT", {}, ValueError("duplicate")))
    assert (
        refused.status == 400 and refused.error == "Invalid request: the request conflicts with stored data"
    )
    with pytest.raises(StoreUnavailable):
        on_error(request, OperationalError("SELECT", {}, ConnectionResetError(104, "reset")))
    broken = on_error(request, RuntimeError("secret value"))
    assert broken.status == 500 and "secret" not in (broken.error or "")


async def test_requests_the_routers_refuse(parts: Any) -> None:
    commands, queries = parts.worker.commands, parts.worker.query_router
    no_instance = await commands.dispatch(Command(name=C.LOGOUT, caller=None))
    assert no_instance == Reply.failure(400, "instance id is required")
    unknown = await commands.dispatch(Command(name=Q.STATUS, instance_id="i"))
    assert unknown is not None and unknown.status == 400 and "unknown" in (unknown.error or "")
    invalid = await parts.cmd(C.CREATE_INSTANCE, new_id(), {"name": ""})
    assert invalid.status == 400 and invalid.details and invalid.details[0]["field"] == "name"
    assert (await queries.dispatch(Query(name=Q.STATUS, instance_id="\x00"))).status == 400
    expired = Query(name=Q.STATUS, instance_id="i", deadline=utcnow() - timedelta(seconds=1))
    assert await queries.dispatch(expired) is None
    error = RequestError(418, "teapot")
    assert error.reply() == Reply.failure(418, "teapot")


async def test_every_request_declares_its_reply_model(parts: Any) -> None:
    for router in (parts.worker.commands, parts.worker.query_router):
        assert [name for name, route in router.routes.items() if route.reply is None] == []


# --- over the bus --------------------------------------------------------------------------------


async def dead_letters(bus: Bus, queue: str) -> int:
    channel = await bus.connection.channel()
    try:
        declared = await channel.declare_queue(dead_letter_queue(queue), passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


async def test_malformed_requests_are_answered_400_not_dead_lettered(ctx: Any) -> None:
    """Bytes that are not a command (or not a query) sent to a shard queue and to the query
    queue, with ``reply_to`` set: a 400 well within the deadline, nothing dead-lettered."""
    query = Query(name=Q.STATUS, instance_id=new_id()).to_bytes()
    cases = [
        (shard_queue(0), b"not a command"),
        (shard_queue(1), query),  # a query is not a command
        (shard_queue(2), b"\xff\xfe"),
        (QUERY_QUEUE, b'{"name": 42}'),
        (QUERY_QUEUE, Command(name=C.LOGOUT, instance_id=new_id()).to_bytes()),
    ]
    for queue, body in cases:
        started = time.monotonic()
        reply: Reply = await raw_bus_request(ctx.bus.connection, queue, body, timeout_s=DEADLINE_S)
        assert time.monotonic() - started < DEADLINE_S
        assert reply.status == 400 and not reply.ok and "malformed" in (reply.error or ""), reply
    for queue in (QUERY_QUEUE, *(shard_queue(k) for k in range(3))):
        assert await dead_letters(ctx.bus, queue) == 0, queue


async def test_commands_for_unknown_instances_leave_no_turn_behind(ctx: Any) -> None:
    """Each command takes its instance's turn; a command naming a random id (404) must not leave
    one behind, or a caller could grow the worker's memory without bound."""
    turns = ctx.worker.turns
    before = len(turns)
    for _ in range(50):
        reply = await ctx.cmd(C.RECONNECT, new_id())
        assert reply.status == 404, reply
    assert len(turns) <= before
