"""Input the store cannot hold is refused at the worker's edge, never retried or dead-lettered.

The real worker (its lifespan) on a PostgreSQL store of its own and a RabbitMQ vhost of its own,
the simulator engine. Requests are sent over the bus the way the gateway sends them (RPC to the
shard queue or ``wa.queries``), or as raw JSON where pydantic could not even produce them (a
``\\ud800`` escape). Each case asserts a 400 reply well within the deadline and an empty
dead-letter queue. Log lines are captured to check that no value of a request reaches them.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.exc import OperationalError

from conftest import fresh_database, wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    QUERY_QUEUE,
    QUERY_ROUTING_KEY,
    Bus,
    RpcClient,
    dead_letter_queue,
    shard_for,
    shard_queue,
)
from wa_common.ids import new_id
from wa_common.schemas import Caller, Command, Query, Reply
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_common.sim_client import sim_scan, sim_send
from wa_session_worker.main import Worker, build_app
from wa_session_worker.settings import WorkerSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

S = 8
ALICE = Caller(user_id="alice")
DEADLINE_S = 10.0
FAST_S = 3.0  # a refusal answers at once; a retried command would take the whole deadline
SECRET = "TOPSECRET-7f3a9c"


class Ctx:
    def __init__(self, bus: Bus, rpc: RpcClient, worker: Worker) -> None:
        self.bus, self.rpc, self.worker = bus, rpc, worker

    async def cmd(
        self, name: str, iid: str, payload: dict[str, Any] | None = None, caller: Caller = ALICE
    ) -> Reply:
        command = Command(
            name=name,
            caller=caller,
            instance_id=iid,
            payload=payload or {},
            deadline=utcnow() + timedelta(seconds=DEADLINE_S),
        )
        return await self.rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, S)), command)

    async def q(
        self, name: str, iid: str | None, payload: dict[str, Any] | None = None, caller: Caller = ALICE
    ) -> Reply:
        query = Query(
            name=name,
            caller=caller,
            instance_id=iid,
            payload=payload or {},
            deadline=utcnow() + timedelta(seconds=DEADLINE_S),
        )
        return await self.rpc.call(EXCHANGE_COMMANDS, QUERY_ROUTING_KEY, query)

    async def raw(self, routing_key: str, body: dict[str, Any]) -> Reply:
        """Send ``body`` as JSON written by the standard library (which escapes a lone surrogate
        as ``\\ud800``, valid JSON) and wait for the reply."""
        channel = await self.bus.connection.channel()
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

            async def on_reply(message: AbstractIncomingMessage) -> None:
                if not answer.done():
                    answer.set_result(Reply.from_bytes(message.body))

            await queue.consume(on_reply, no_ack=True)
            request_id = new_id()
            await self.bus.publish(
                EXCHANGE_COMMANDS,
                routing_key,
                json.dumps(body).encode(),
                message_id=request_id,
                rpc_correlation_id=request_id,
                reply_to=queue.name,
                expiration_s=DEADLINE_S,
            )
            return await asyncio.wait_for(answer, DEADLINE_S)
        finally:
            await channel.close()

    async def dead_letters(self, queue: str) -> int:
        channel = await self.bus.connection.channel()
        try:
            declared = await channel.declare_queue(dead_letter_queue(queue), passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def create(self, name: str = "input-safety") -> str:
        iid = new_id()
        reply = await self.cmd(C.CREATE_INSTANCE, iid, {"name": name})
        assert reply.status == 201, reply
        return iid


def envelope(name: str, iid: str | None, payload: dict[str, Any], kind: str = "command") -> dict[str, Any]:
    request = (Command if kind == "command" else Query)(
        name=name, caller=ALICE, instance_id=iid, deadline=utcnow() + timedelta(seconds=DEADLINE_S)
    )
    return {**request.model_dump(mode="json"), "payload": payload}


@pytest.fixture(scope="module")
async def pg_store() -> AsyncIterator[str]:
    """A database of its own (other modules' leases and rows stay out of the way)."""
    async with fresh_database("wa_test_input", migrate="wa_session_worker") as url:
        yield url


@pytest.fixture(scope="module")
async def ctx(
    amqp_url: str,
    vhost_factory: Callable[[], str],
    pg_store: str,
    worker_settings: Callable[..., WorkerSettings],
) -> AsyncIterator[Ctx]:
    # A vhost of its own: no other module's worker consumes these shard queues.
    amqp_url = f"{amqp_url.rpartition('/')[0]}/{vhost_factory()}"
    settings = worker_settings("input-worker", amqp_url, pg_store, S)
    app = build_app(settings)
    async with app.state.runtime.lifespan(app):
        bus = Bus(amqp_url, service="input-test", shard_count=S, prefetch=64, delivery_limit=5)
        await bus.connect()
        rpc = RpcClient(bus)
        await rpc.start()
        await wait_for(
            lambda: len(app.state.shards.owned()) == S, timeout_s=20, message="worker owns all shards"
        )
        yield Ctx(bus, rpc, app.state.worker)
        await bus.close()


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every structlog line (exceptions rendered, as in production) written to a buffer."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(buffer),
        cache_logger_on_first_use=False,
    )
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


async def refused(call: Any, field: str | None = None) -> Reply:
    """Await ``call`` (a reply coroutine): it must be a 400 well within the deadline."""
    started = time.monotonic()
    reply: Reply = await call
    assert time.monotonic() - started < FAST_S, "refusal took as long as a retried command"
    assert reply.status == 400 and not reply.ok, reply
    if field is not None:
        assert reply.details and field in [d["field"] for d in reply.details], reply
    return reply


# --- finding 1a: the worker's edge check ---------------------------------------------------------


async def test_nul_characters_are_refused_not_dead_lettered(ctx: Ctx) -> None:
    fresh = new_id()
    await refused(ctx.cmd(C.CREATE_INSTANCE, fresh, {"name": "n", "description": "a\x00b"}), "description")
    await refused(ctx.cmd(C.CREATE_INSTANCE, fresh, {"name": "n", "headers": {"X-A\x00": "v"}}), "headers")
    assert await ctx.dead_letters(shard_queue(shard_for(fresh, S))) == 0
    iid = await ctx.create()
    queue = shard_queue(shard_for(iid, S))
    update = {"webhookSettings": {"headers": {"Authorization": f"Bearer {SECRET}\x00"}}}
    reply = await refused(ctx.cmd(C.UPDATE_INSTANCE, iid, update), "webhookSettings.headers.Authorization")
    assert SECRET not in reply.model_dump_json(), "an error reply quotes a header value"
    contact = {"number": "15550001111", "name": "Zed\x00"}
    await refused(ctx.cmd(C.SAVE_CONTACT, iid, contact), "name")
    assert await ctx.dead_letters(queue) == 0
    # The instance is intact and answers normally afterwards.
    assert (await ctx.q(Q.GET_INSTANCE, iid)).status == 200


async def test_oversized_values_are_refused_within_column_sizes(ctx: Ctx) -> None:
    iid = await ctx.create()
    queue = shard_queue(shard_for(iid, S))
    # 20 updates with 0.9 MB of headers once filled the dead-letter queue with 18 MB.
    big = {"webhookSettings": {"headers": {"X-Big": "v" * 900_000}}}
    await refused(ctx.cmd(C.UPDATE_INSTANCE, iid, big), "webhookSettings.headers.X-Big")
    many = {"headers": {f"X-H{i}": "v" for i in range(21)}}
    await refused(ctx.cmd(C.CREATE_INSTANCE, new_id(), {"name": "n", **many}), "headers")
    # Contact names: the column holds 256 characters; 550 used to be a 5xx.
    await refused(ctx.cmd(C.SAVE_CONTACT, iid, {"number": "15550002222", "name": "x" * 550}), "name")
    await refused(ctx.cmd(C.ADD_CONTACT, iid, {"phone": "15550002222", "name": "x" * 550}), "name")
    fits = await ctx.cmd(C.SAVE_CONTACT, iid, {"number": "15550002222", "name": "x" * 256})
    assert fits.ok and fits.data["name"] == "x" * 256, fits
    long_url = {"webhookUrl": "https://e.example/" + "p" * 2048}
    await refused(ctx.cmd(C.UPDATE_INSTANCE, iid, long_url), "webhookUrl")
    assert await ctx.dead_letters(queue) == 0


async def test_lone_surrogate_escape_is_answered_400(ctx: Ctx) -> None:
    iid = new_id()
    queue = shard_queue(shard_for(iid, S))
    body = envelope(C.CREATE_INSTANCE, iid, {"name": "bad \ud800 name"})
    await refused(ctx.raw(queue, body), "name")
    body = envelope(C.CREATE_INSTANCE, iid, {"name": "n", "headers": {"X-\udc00": "v"}})
    await refused(ctx.raw(queue, body), "headers")
    query = envelope(Q.CONTACTS_DB, iid, {"search": "\udfff"}, kind="query")
    await refused(ctx.raw(QUERY_ROUTING_KEY, query), "search")
    assert await ctx.dead_letters(queue) == 0
    assert await ctx.dead_letters(QUERY_QUEUE) == 0
    assert (await ctx.q(Q.GET_INSTANCE, iid)).status == 404, "nothing was created"


async def test_queries_refuse_nul_and_huge_integers(ctx: Ctx) -> None:
    iid = await ctx.create()
    await refused(ctx.q(Q.CONTACTS_DB, iid, {"search": "a\x00"}), "search")
    await refused(ctx.q(Q.CONTACTS_DB, iid, {"skip": 2**70}), "skip")
    await refused(ctx.q(Q.ACTIVITY, iid, {"skip": 2**63}), "skip")
    await refused(ctx.q(Q.GET_INSTANCE, "01\x00"), "instanceId")
    assert (await ctx.q(Q.GET_INSTANCE, "x" * 41)).status == 404, "no instance has a longer id"
    assert await ctx.dead_letters(QUERY_QUEUE) == 0


# --- finding 1b: store data errors are answered, infrastructure errors retried -------------------


async def test_store_data_errors_are_answered_outages_retried(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even past the edge check, a value the store refuses is the caller's: 400 and acked. Only
    infrastructure failures are retried: a command that meets a lost connection twice is
    redelivered and answered by its third delivery."""
    from wa_session_worker.service import guard

    monkeypatch.setattr(guard, "check_request", lambda request: None)
    repo = ctx.worker.repo
    real_create = repo.create_instance
    spoiled: dict[str, Any] = {}

    async def create_spoiled(rec: Any) -> bool:
        for key, value in spoiled.items():
            setattr(rec, key, value)
        return await real_create(rec)

    monkeypatch.setattr(repo, "create_instance", create_spoiled)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"description": "a\x00b"}, "characters"),  # CharacterNotInRepertoire (22021)
        ({"description": f"{SECRET} \ud800"}, "characters"),  # asyncpg quotes this argument
        ({"name": "x" * 300}, "longer"),  # StringDataRightTruncation (22001)
        ({"shard": 2**40}, "out of range"),  # int32 column, asyncpg OverflowError
    ]
    with captured_logs() as logs:
        for values, words in cases:
            spoiled.clear()
            spoiled.update(values)
            iid = new_id()
            reply = await refused(ctx.cmd(C.CREATE_INSTANCE, iid, {"name": "n"}))
            assert words in (reply.error or ""), reply
            assert await ctx.dead_letters(shard_queue(shard_for(iid, S))) == 0

        real_list = repo.list_contacts

        async def list_spoiled(instance_id: str, **kw: Any) -> Any:
            return await real_list(instance_id, **{**kw, "skip": 2**70})

        monkeypatch.setattr(repo, "list_contacts", list_spoiled)
        spoiled.clear()
        iid = await ctx.create()
        reply = await refused(ctx.q(Q.CONTACTS_DB, iid))
        assert "out of range" in (reply.error or "")
        assert await ctx.dead_letters(QUERY_QUEUE) == 0
    text = logs.getvalue()
    assert "the store cannot hold its data" in text
    assert SECRET not in text, "a driver error quoting a stored value reached the logs"

    real_get = repo.get_instance
    failures: list[str] = []

    async def flaky_get(instance_id: str) -> Any:
        if instance_id == iid and len(failures) < 2:
            failures.append(instance_id)
            raise OperationalError("SELECT", {}, ConnectionResetError(104, "connection reset"))
        return await real_get(instance_id)

    monkeypatch.setattr(repo, "get_instance", flaky_get)
    reply = await ctx.cmd(C.UPDATE_INSTANCE, iid, {"description": "after an outage"})
    assert reply.ok and reply.data["description"] == "after an outage", reply
    assert len(failures) == 2
    assert await ctx.dead_letters(shard_queue(shard_for(iid, S))) == 0


# --- finding 2: recipients and chat ids are ASCII ------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0660\u0660\u0660\u0662",  # Arabic-Indic digits
        "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff10\uff10\uff10\uff12",  # fullwidth digits
        "15550000002\n",
        "1555\n0000002@s.whatsapp.net",
        "15550000002@broadcast",
    ],
)
async def test_recipients_must_be_ascii_digits_or_jids(ctx: Ctx, phone: str) -> None:
    iid = await ctx.create()
    await refused(ctx.cmd(C.SEND_TEXT, iid, {"phone": phone, "message": "hi"}), "phone")
    await refused(ctx.cmd(C.SAVE_CONTACT, iid, {"number": phone, "name": "x"}), "number")
    await refused(ctx.q(Q.CHAT_MESSAGES, iid, {"chatId": phone}), "chatId")
    contacts = (await ctx.q(Q.CONTACTS_DB, iid)).data
    assert contacts["pagination"]["total"] == 0, "a refused number was stored as a chat id"


async def test_group_ids_are_checked(ctx: Ctx) -> None:
    iid = await ctx.create()
    await refused(ctx.cmd(C.SAVE_CONTACT, iid, {"number": "team@g.us", "isGroup": True}), "number")
    await refused(ctx.cmd(C.SAVE_CONTACT, iid, {"number": "12\n345", "isGroup": True}), "number")
    saved = await ctx.cmd(C.SAVE_CONTACT, iid, {"number": "120363025246125486", "isGroup": True})
    assert saved.ok and saved.data["remoteJid"] == "120363025246125486@g.us", saved


# --- finding 3 and inbound text -----------------------------------------------------------------


async def test_failure_logs_and_replies_carry_no_request_values(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = ctx.worker.repo

    async def broken(rec: Any) -> bool:
        raise RuntimeError(f"cannot store {rec.webhook_settings}")

    monkeypatch.setattr(repo, "create_instance", broken)
    payload = {"name": "n", "webhookSecret": SECRET, "headers": {"Authorization": f"Bearer {SECRET}"}}
    with captured_logs() as logs:
        reply = await ctx.cmd(C.CREATE_INSTANCE, new_id(), payload)
    assert reply.status == 500, reply
    assert SECRET not in reply.model_dump_json()
    text = logs.getvalue()
    assert "command failed" in text and "RuntimeError" in text and "create_instance" in text
    assert SECRET not in text, "an exception message carrying the webhook secret was logged"


async def test_inbound_text_with_nul_is_stored(ctx: Ctx) -> None:
    """WhatsApp text the store cannot hold as is (a NUL) is stored with U+FFFD, not lost."""
    iid = await ctx.create("inbound")

    async def code() -> str | None:
        r = await ctx.q(Q.QR, iid)
        return r.data["qrCode"] if r.status == 200 else None

    await sim_scan(ctx.bus, await wait_for(code, timeout_s=10, message="QR"), "15550003333")

    async def connected() -> bool:
        return (await ctx.q(Q.STATUS, iid)).data["status"] == "connected"

    await wait_for(connected, timeout_s=10, message="connected")
    await sim_send(ctx.bus, "15550004444", "15550003333@s.whatsapp.net", text="a\x00b", push_name="E\x00ve")

    async def stored() -> list[dict[str, Any]]:
        r = await ctx.q(Q.CHAT_MESSAGES, iid, {"chatId": "15550004444"})
        return list(r.data["messages"]) if r.ok else []

    messages = await wait_for(stored, timeout_s=10, message="inbound message stored")
    assert messages[0]["content"] == "a\ufffdb"
    assert messages[0]["metadata"]["pushName"] == "E\ufffdve"
