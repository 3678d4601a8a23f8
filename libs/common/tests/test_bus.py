"""The bus client against the real RabbitMQ (issue 2 acceptance)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from conftest import close_broker_connections, rabbitmqctl, wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    EXCHANGE_EVENTS,
    Bus,
    Delivery,
    PublishError,
    QueueSpec,
    Reject,
    RequestTimeout,
    RpcClient,
    dead_letter_queue,
    send_reply,
    shard_for,
    shard_queue,
)
from wa_common.bus.topology import declare_queue
from wa_common.ids import new_id
from wa_common.schemas import Command, Event, Reply, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def amqp_vhost(vhost_factory) -> str:
    """A vhost of this module's own: its queues use a delivery limit of 2, not the default."""
    return vhost_factory()


@pytest.fixture(scope="module")
def amqp_url(amqp_vhost: str) -> str:
    from conftest import AMQP_HOST

    return f"amqp://guest:guest@{AMQP_HOST}/{amqp_vhost}"


SHARDS = 4
LIMIT = 2


def make_bus(url: str, name: str = "test") -> Bus:
    return Bus(
        url,
        service=name,
        shard_count=SHARDS,
        delivery_limit=LIMIT,
        prefetch=8,
        requeue_delay_s=0.01,
        publish_timeout_s=5,
    )


@pytest.fixture
async def bus(amqp_url: str):
    b = make_bus(amqp_url)
    await b.connect()
    yield b
    await b.close(timeout_s=2)


def unique_spec(**kwargs) -> QueueSpec:
    name = f"wa.test.{new_id().lower()}"
    return QueueSpec(name, ((EXCHANGE_EVENTS, f"{name}.#"),), **kwargs)


async def message_count(bus: Bus, queue: str) -> int:
    channel = await bus.connection.channel()
    try:
        q = await channel.declare_queue(queue, passive=True)
        return q.declaration_result.message_count or 0
    finally:
        await channel.close()


async def test_topology_declared(bus: Bus, amqp_vhost: str) -> None:
    listed = rabbitmqctl("list_queues", "-p", amqp_vhost, "name", "arguments")
    for k in range(SHARDS):
        assert f"{shard_queue(k)}\t" in listed
    assert "wa.queries\t" in listed and "x-single-active-consumer" in listed
    exchanges = rabbitmqctl("list_exchanges", "-p", amqp_vhost, "name", "type")
    for name, kind in (
        ("wa.commands", "direct"),
        ("wa.events", "topic"),
        ("wa.sim", "topic"),
        ("wa.dlx", "direct"),
    ):
        assert f"{name}\t{kind}" in exchanges


async def test_publish_returns_after_confirm_and_message_is_stored(bus: Bus) -> None:
    spec = unique_spec()
    consumer = await bus.consume(spec, lambda d: asyncio.sleep(0))  # declares the queue
    await consumer.cancel()
    for i in range(20):
        await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", f"m{i}".encode())
    # Confirmed means the broker holds it: every message is countable at once.
    assert await message_count(bus, spec.name) == 20


async def test_unroutable_mandatory_publish_raises(bus: Bus) -> None:
    with pytest.raises(PublishError, match="returned"):
        await bus.publish(EXCHANGE_COMMANDS, "no.such.queue", b"x")


async def test_failing_handler_dead_letters_after_delivery_limit(bus: Bus) -> None:
    spec = unique_spec()
    attempts: list[int] = []

    async def always_fails(d: Delivery) -> None:
        attempts.append(d.delivery_count)
        raise RuntimeError("boom")

    consumer = await bus.consume(spec, always_fails)
    await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"poison", message_id="poison-1")
    dead = dead_letter_queue(spec.name)
    await wait_for(lambda: message_count(bus, dead), timeout_s=15, message="message in the dead-letter queue")
    await consumer.cancel()
    # Delivered once, then redelivered until the count passed the limit: 1 + LIMIT attempts.
    assert len(attempts) == 1 + LIMIT
    assert await message_count(bus, spec.name) == 0
    channel = await bus.connection.channel()
    q = await channel.declare_queue(dead, passive=True)
    msg = await q.get(timeout=5)
    assert msg is not None and msg.body == b"poison" and msg.message_id == "poison-1"
    await msg.ack()
    await channel.close()


async def test_reject_dead_letters_at_once(bus: Bus) -> None:
    spec = unique_spec()
    calls = 0

    async def rejects(_: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise Reject("malformed")

    consumer = await bus.consume(spec, rejects)
    await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"bad")
    await wait_for(
        lambda: message_count(bus, dead_letter_queue(spec.name)),
        timeout_s=10,
        message="rejected message dead-lettered",
    )
    await consumer.cancel()
    assert calls == 1


async def test_request_reply_and_deadline(bus: Bus) -> None:
    rpc = RpcClient(bus)
    await rpc.start()

    async def serve(d: Delivery) -> None:
        cmd = Command.from_bytes(d.body)
        await send_reply(bus, d, Reply.success({"echo": cmd.payload["x"]}))

    shard = shard_for("inst-1", SHARDS)
    consumer = await bus.consume(shard_queue(shard), serve)
    reply = await rpc.call(EXCHANGE_COMMANDS, shard_queue(shard), Command(name="echo", payload={"x": 7}))
    assert reply.ok and reply.data == {"echo": 7}
    await consumer.cancel()

    # Nobody consumes this shard now: the call must end at its deadline, not hang.
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="no reply"):
        await rpc.call(
            EXCHANGE_COMMANDS,
            shard_queue(shard),
            Command(name="echo", payload={"x": 1}, deadline=utcnow() + timedelta(seconds=0.7)),
        )
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 1.5
    # The broker drops the expired request (message TTL = deadline): it is never executed late.
    await wait_for(
        lambda: _is_zero(message_count(bus, shard_queue(shard))),
        timeout_s=5,
        message="expired command dropped",
    )


async def _is_zero(count) -> bool:
    return (await count) == 0


async def test_events_route_by_type_and_instance(bus: Bus) -> None:
    received: list[Event] = []
    spec = QueueSpec(f"wa.test.{new_id().lower()}", ((EXCHANGE_EVENTS, "message_sent.*"),))

    async def handler(d: Delivery) -> None:
        received.append(Event.from_bytes(d.body))

    consumer = await bus.consume(spec, handler)
    await bus.publish_event(Event(type="message_sent", instance_id="i1", data={"a": "Привет 👋"}))
    await bus.publish_event(Event(type="connected", instance_id="i1"))
    await wait_for(lambda: received, message="event received")
    await consumer.cancel()
    assert [e.type for e in received] == ["message_sent"]
    assert received[0].data == {"a": "Привет 👋"}


async def test_a_cancelled_transient_consumer_stops_and_is_forgotten(bus: Bus, amqp_vhost: str) -> None:
    """What a live stream does when its last reader leaves: its exclusive queue goes away, no
    more messages arrive, and the bus no longer holds the consumer (no growth over days)."""
    received: list[Event] = []

    async def handler(d: Delivery) -> None:
        received.append(Event.from_bytes(d.body))

    prefix = f"wa.test.live.{new_id().lower()}"
    consumer = await bus.consume_transient([(EXCHANGE_EVENTS, "connected.#")], handler, name_prefix=prefix)
    await bus.publish_event(Event(type="connected", instance_id="i1"))
    await wait_for(lambda: received, message="event received")
    await bus.cancel_consumer(consumer)
    assert consumer not in bus._consumers

    def live_queues() -> list[str]:
        names = rabbitmqctl("-q", "-s", "list_queues", "-p", amqp_vhost, "name").split()
        return [n for n in names if n.startswith(prefix)]

    await wait_for(lambda: not live_queues(), timeout_s=30, message="exclusive queue deleted")
    await bus.publish_event(Event(type="connected", instance_id="i2"))
    assert [e.instance_id for e in received] == ["i1"]


async def test_consumer_survives_broker_side_close_without_losing_unacked(
    amqp_url: str, amqp_vhost: str
) -> None:
    name = f"consumer-{new_id().lower()}"
    consumer_bus = make_bus(amqp_url, name)
    await consumer_bus.connect()
    publisher = make_bus(amqp_url, "publisher")
    await publisher.connect()
    spec = unique_spec()
    release = asyncio.Event()
    seen: list[bytes] = []
    done: list[bytes] = []

    async def handler(d: Delivery) -> None:
        seen.append(d.body)
        if d.body == b"first" and not release.is_set():
            await asyncio.Event().wait()  # hold the first delivery unacked until the connection dies
        done.append(d.body)

    await consumer_bus.consume(spec, handler)
    await publisher.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"first")
    await wait_for(lambda: seen, message="first delivery")

    release.set()
    assert close_broker_connections(name, amqp_vhost) == 1

    # The unacked message comes back on the restored connection, and new ones still flow.
    await wait_for(
        lambda: b"first" in done, timeout_s=20, message="unacked message redelivered after reconnect"
    )
    await publisher.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"second")
    await wait_for(lambda: b"second" in done, timeout_s=10, message="consumption resumed")
    assert seen.count(b"first") == 2
    await consumer_bus.close(timeout_s=2)
    await publisher.close(timeout_s=2)


async def test_cancel_waits_for_in_flight_handlers(bus: Bus) -> None:
    spec = unique_spec()
    finished: list[int] = []
    started = asyncio.Event()

    async def slow(d: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(1)

    consumer = await bus.consume(spec, slow)
    await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"x")
    await asyncio.wait_for(started.wait(), 5)
    await consumer.cancel(timeout_s=5)
    assert finished == [1]
    assert await message_count(bus, spec.name) == 0  # it was acked, not returned


async def test_handler_outliving_cancel_does_not_ack_on_closed_channel(bus: Bus) -> None:
    spec = unique_spec()
    release = asyncio.Event()
    started = asyncio.Event()
    deliveries: list[int] = []

    async def slow(d: Delivery) -> None:
        deliveries.append(d.delivery_count)
        started.set()
        await release.wait()

    consumer = await bus.consume(spec, slow)
    await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"x")
    await asyncio.wait_for(started.wait(), 5)
    await consumer.cancel(timeout_s=0.2)  # gives up while the handler still runs
    release.set()
    # The message went back to the queue and the bus connection is still usable.
    await wait_for(
        lambda: _equals(message_count(bus, spec.name), 1), timeout_s=10, message="message requeued"
    )
    assert await bus.is_healthy()
    await bus.publish(EXCHANGE_EVENTS, f"{spec.name}.x", b"y")


async def _equals(count, expected: int) -> bool:
    return (await count) == expected


async def test_events_published_together_share_messages_and_arrive_one_by_one(bus: Bus) -> None:
    """Event format 2 (``wa_common.bus.batches``): five events of two types are two broker
    messages; the handler still sees each event on its own, with its id and routing key, and the
    one event it rejects is dead-lettered alone."""
    spec = QueueSpec(f"wa.test.{new_id().lower()}", ((EXCHANGE_EVENTS, "#"),))
    seen: list[tuple[str | None, str, Event]] = []
    messages: set[str | None] = set()

    async def handler(d: Delivery) -> None:
        event = Event.from_bytes(d.body)
        messages.add(d.message.message_id)
        if event.data.get("n") == 3:
            raise Reject("the third is malformed")
        seen.append((d.message_id, d.routing_key, event))

    consumer = await bus.consume(spec, handler)
    sent = [
        Event(type="message_sent" if n % 2 else "message_status", instance_id=f"i{n}", data={"n": n})
        for n in range(5)
    ]
    assert await bus.publish_events(sent) == [None] * 5
    await wait_for(lambda: _at_least(seen, 4), timeout_s=10, message="four events handled")
    await wait_for(
        lambda: message_count(bus, dead_letter_queue(spec.name)), timeout_s=10, message="rejected event"
    )
    await consumer.cancel()
    assert len(messages) == 2  # one message per type
    by_id = {event.id: (message_id, key) for message_id, key, event in seen}
    assert sorted(by_id) == sorted(e.id for e in sent if e.data["n"] != 3)
    for event in sent:
        if event.data["n"] != 3:
            assert by_id[event.id] == (event.id, event.routing_key)
    channel = await bus.connection.channel()
    dead = await channel.declare_queue(dead_letter_queue(spec.name), passive=True)
    msg = await dead.get(timeout=5)
    assert msg is not None and Event.from_bytes(msg.body).data == {"n": 3}
    await msg.ack()
    await channel.close()


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


async def test_a_retired_binding_is_removed_when_the_queue_is_declared(bus: Bus) -> None:
    """Releases before issue 15 bound the stats and dispatcher queues to ``#``; declaring the
    queue with its type bindings removes that one, so other types stop arriving."""
    name = f"wa.test.{new_id().lower()}"
    old = QueueSpec(name, ((EXCHANGE_EVENTS, "#"),))
    new = QueueSpec(name, ((EXCHANGE_EVENTS, "message_sent.#"),), retired=((EXCHANGE_EVENTS, "#"),))
    channel = await bus.connection.channel()
    try:
        await declare_queue(channel, old, LIMIT)
        await declare_queue(channel, new, LIMIT)
        await bus.publish_event(Event(type="message_status", instance_id="i1"))
        await bus.publish_event(Event(type="message_sent", instance_id="i1"))
        queue = await channel.declare_queue(name, passive=True)
        first = await wait_for(lambda: queue.get(fail=False), timeout_s=10, message="the bound event")
        assert Event.from_bytes(first.body).type == "message_sent"
        await first.ack()
        assert await queue.get(fail=False) is None  # message_status was not routed here
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await channel.close()
