"""The gateway's requests (``wa_webhooks.api`` on the shared request router): what is declared,
how bad input is answered (400 with field details, never dead-lettered), and on the real bus a
malformed request answered 400 within its deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from conftest import raw_bus_request
from tests.support.dispatcher import Stack
from wa_common.bus import WEBHOOKS_QUERY_QUEUE, dead_letter_queue
from wa_common.clock import utcnow
from wa_common.schemas import Caller, Command, Query, Reply, Request
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.webhooks import WebhooksOperation
from wa_webhooks.api import WebhooksApi

ADMIN = Caller(user_id="root", role="admin")
USER = Caller(user_id="u1")


def api(database_url: str | None = None) -> WebhooksApi:
    """The handlers without a store: enough for everything answered before a handler runs."""
    return WebhooksApi(cast(Any, None), cast(Any, None), database_url=database_url)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- without a broker ---------------------------------------------------------------------------


def test_every_operation_is_declared_and_the_store_status_only_with_a_store() -> None:
    operations = {str(op) for op in WebhooksOperation}
    assert set(api().router.routes) == operations
    assert set(api("sqlite:///data/webhooks.db").router.routes) == operations | {SessionQuery.STORE_STATUS}


@pytest.mark.parametrize(
    ("name", "payload", "field"),
    [
        (WebhooksOperation.LIST_DELIVERIES, {"limit": "many"}, "limit"),
        (WebhooksOperation.LIST_DELIVERIES, {"limit": 501}, "limit"),
        (WebhooksOperation.LIST_DELIVERIES, {"skip": -1}, "skip"),
        (WebhooksOperation.LIST_DELIVERIES, {"status": "bogus"}, "status"),
        (WebhooksOperation.REDELIVER, {}, "deliveryId"),
        (WebhooksOperation.SEND_TEST, {"extra": 1}, "extra"),
    ],
)
async def test_an_invalid_payload_is_answered_400_naming_the_field(
    name: str, payload: dict[str, Any], field: str
) -> None:
    reply = await api().router.dispatch(Command(name=name, instance_id="i", caller=USER, payload=payload))
    assert reply is not None and reply.status == 400 and not reply.ok
    assert reply.details is not None and [d["field"] for d in reply.details] == [field]


async def test_unknown_expired_and_admin_only_requests() -> None:
    router = api("postgresql://user:secret@db:5432/webhooks").router
    unknown = await router.dispatch(Query(name="webhooks.nope", caller=USER))
    assert unknown is not None and unknown.status == 400
    expired = Query(
        name=WebhooksOperation.LIST_DELIVERIES, caller=USER, deadline=utcnow() - timedelta(seconds=1)
    )
    assert await router.dispatch(expired) is None, "dropped: its caller has given up"
    refused = await router.dispatch(Query(name=SessionQuery.STORE_STATUS, caller=USER))
    assert refused is not None and refused.status == 403
    status = await router.dispatch(Query(name=SessionQuery.STORE_STATUS, caller=ADMIN))
    assert status is not None and status.data == {
        "provider": "postgresql",
        "url": "postgresql://db:5432/webhooks",
    }


# --- on the bus ---------------------------------------------------------------------------------


async def raw_request(stack: Stack, body: bytes, timeout_s: float = 10.0) -> Reply:
    """Publish ``body`` as a request to the dispatcher (``wa.queries.webhooks``); the reply."""
    reply: Reply = await raw_bus_request(stack.bus.connection, WEBHOOKS_QUERY_QUEUE, body, timeout_s)
    return reply


def nacked(requeue: str) -> float:
    return sample("wa_bus_messages_nacked_total", {"queue": WEBHOOKS_QUERY_QUEUE, "requeue": requeue})


@pytest.mark.integration
async def test_a_malformed_request_is_answered_400_within_its_deadline(stack: Stack) -> None:
    """Bytes that are not a request, with ``reply_to`` set: the caller waits for an answer, so it
    gets a 400 before the deadline every request carries (``Request``'s default), instead of a
    timeout while the message goes to the dead-letter queue."""
    deadline_s = Request(name="any").remaining_s()
    malformed = sample("wa_bus_requests_total", {"name": "unknown", "outcome": "error"})
    for body in (b"not json", b"\xff", b"[]", b'{"name": 7}', b'{"caller": {"user_id": "u1"}}'):
        started = time.monotonic()
        reply = await raw_request(stack, body, timeout_s=deadline_s)
        assert time.monotonic() - started < deadline_s
        assert (reply.ok, reply.status, reply.error) == (False, 400, "malformed request"), body
    assert sample("wa_bus_requests_total", {"name": "unknown", "outcome": "error"}) == malformed + 5


@pytest.mark.integration
async def test_a_bad_request_is_answered_and_never_dead_lettered(
    stack: Stack, http_servers: Callable[..., Any]
) -> None:
    before = {r: nacked(r) for r in ("true", "false")}
    for body in (b"not json", b"\xff", b'{"name": 7}', b'{"name": "webhooks.test", "caller": "root"}'):
        reply = await raw_request(stack, body)
        assert reply.status == 400 and not reply.ok, (body, reply)
    r = await http_servers()
    iid = await stack.create_instance(r.url())
    for instance_id in ("\x00", "x" * 65, "a/b"):
        assert (await stack.call("webhooks.deliveries.list", instance_id)).status == 404
    for delivery_id in ("\x00", "y" * 300):
        reply = await stack.call(
            "webhooks.deliveries.redeliver", iid, {"deliveryId": delivery_id}, command=True
        )
        assert reply.status == 404, reply
    assert (await stack.call("webhooks.deliveries.list", iid, {"limit": "many"})).status == 400
    assert {r: nacked(r) for r in before} == before

    channel = await stack.bus.connection.channel()
    try:
        dead = await channel.declare_queue(dead_letter_queue(WEBHOOKS_QUERY_QUEUE), passive=True)
        assert dead.declaration_result.message_count == 0
    finally:
        await channel.close()
