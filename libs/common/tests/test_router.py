"""The request router (``wa_common.bus.router``): in memory through ``dispatch``, and over the
real RabbitMQ for what only the transport shows (a malformed request answered 400)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from pydantic import Field

from conftest import raw_bus_request
from wa_common.bus import Bus, QueueSpec, RpcClient
from wa_common.bus.router import RequestError, Router
from wa_common.ids import new_id
from wa_common.schemas import Command, Query, Reply, Request, utcnow
from wa_common.schemas.wire import ApiModel, UtcDateTime


class Echo(ApiModel):
    text: str = Field(max_length=8)


class Echoed(ApiModel):
    text: str
    at: UtcDateTime


def make_router(**kwargs) -> Router:
    router = Router("test", **kwargs)

    @router.route("echo", payload=Echo, reply=Echoed)
    async def echo(request: Request, body: Echo) -> Echoed:
        return Echoed(text=body.text, at=utcnow())

    @router.route("missing")
    async def missing(request: Request) -> None:
        raise RequestError(404, "Instance not found")

    @router.route("created")
    async def created(request: Request) -> Reply:
        return Reply.success({"id": "x"}, status=201)

    @router.route("broken")
    async def broken(request: Request) -> None:
        raise RuntimeError("a bug")

    @router.route("wrong", reply=Echoed)
    async def wrong(request: Request) -> Echo:
        return Echo(text="not it")

    return router


def query(name: str, payload: dict | None = None, **kwargs) -> Query:
    return Query(name=name, payload=payload or {}, **kwargs)


def count(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("wa_bus_requests_total", {"name": name, "outcome": outcome}) or 0.0


async def test_a_model_reply_is_its_camel_case_json_with_utc_milliseconds() -> None:
    reply = await make_router().dispatch(query("echo", {"text": "hi"}))
    assert reply is not None and reply.ok and reply.status == 200
    assert set(reply.data) == {"text", "at"}
    assert reply.data["text"] == "hi"
    assert reply.data["at"].endswith("Z") and len(reply.data["at"]) == len("2026-01-01T00:00:00.000Z")


async def test_invalid_payload_is_400_naming_the_field() -> None:
    reply = await make_router().dispatch(query("echo", {"text": "far too long"}))
    assert reply is not None and not reply.ok and reply.status == 400
    assert reply.details is not None and reply.details[0]["field"] == "text"
    assert "far too long" not in (reply.error or "")  # never the offending value


async def test_unknown_name_is_400_and_counted_as_unknown() -> None:
    before = count("unknown", "error")
    reply = await make_router().dispatch(query("no.such"))
    assert reply is not None and reply.status == 400 and "no.such" in (reply.error or "")
    assert count("unknown", "error") == before + 1


async def test_request_error_becomes_its_status_and_message() -> None:
    reply = await make_router().dispatch(query("missing"))
    assert reply == Reply.failure(404, "Instance not found")


async def test_a_reply_from_the_handler_keeps_its_status() -> None:
    reply = await make_router().dispatch(query("created"))
    assert reply is not None and reply.status == 201 and reply.data == {"id": "x"}


async def test_unexpected_failure_is_500_by_default_and_on_error_can_change_that() -> None:
    reply = await make_router().dispatch(query("broken"))
    assert reply is not None and reply.status == 500 and "a bug" not in (reply.error or "")

    def redeliver(request: Request, exc: Exception) -> Reply:
        raise exc

    with pytest.raises(RuntimeError, match="a bug"):
        await make_router(on_error=redeliver).dispatch(query("broken"))


async def test_a_reply_of_another_model_than_declared_fails() -> None:
    reply = await make_router().dispatch(query("wrong"))
    assert reply is not None and reply.status == 500


async def test_expired_request_is_dropped_and_counted() -> None:
    before = count("echo", "expired")
    late = query("echo", {"text": "hi"}, deadline=utcnow() - timedelta(seconds=1))
    assert await make_router().dispatch(late) is None
    assert count("echo", "expired") == before + 1


async def test_guard_and_around_run_around_the_handler() -> None:
    seen: list[str] = []

    def guard(request: Request) -> Reply | None:
        return Reply.failure(400, "refused") if request.instance_id == "bad" else None

    async def around(request: Request, run):
        seen.append(f"before {request.name}")
        try:
            return await run()
        finally:
            seen.append("after")

    router = make_router(guard=guard, around=around)
    assert await router.dispatch(query("echo", {"text": "a"}, instance_id="bad")) == Reply.failure(
        400, "refused"
    )
    assert seen == []
    reply = await router.dispatch(query("echo", {"text": "a"}, instance_id="ok"))
    assert reply is not None and reply.ok and seen == ["before echo", "after"]


def test_a_name_declared_twice_is_refused() -> None:
    router = make_router()
    with pytest.raises(ValueError, match="twice"):
        router.add("echo", make_router().routes["echo"].handler)


def test_include_merges_routers_of_several_modules() -> None:
    combined = Router("all")
    combined.include(make_router())
    assert {"echo", "missing", "created"} <= set(combined.routes)


def test_decode_reads_a_lone_surrogate_the_json_parser_refuses() -> None:
    body = b'{"name": "echo", "payload": {"text": "\\ud800"}}'
    request = Router("test", kind=Command).decode(body)
    assert isinstance(request, Command) and request.payload == {"text": "\ud800"}


@pytest.mark.integration
async def test_over_the_bus_a_malformed_request_gets_400_and_a_good_one_its_reply(amqp_url: str) -> None:
    bus = Bus(amqp_url, service="router-test")
    await bus.connect()
    rpc = RpcClient(bus)
    await rpc.start()
    spec = QueueSpec(f"wa.test.router.{new_id().lower()}", ())
    consumer = await bus.consume(spec, make_router().consumer(bus))
    try:
        reply = await raw_bus_request(bus.connection, spec.name, b"not a request", timeout_s=5)
        assert reply.status == 400 and reply.error == "malformed request"
        reply = await rpc.call("", spec.name, query("echo", {"text": "hi"}))
        assert reply.ok and reply.data["text"] == "hi"
    finally:
        await consumer.cancel()
        await bus.close(timeout_s=2)
