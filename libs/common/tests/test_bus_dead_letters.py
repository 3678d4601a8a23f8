"""Bounded dead-letter queues against the real RabbitMQ: the oldest dead letters are dropped
first, every drop is counted by queue family, and a dead-letter queue left unbounded by an older
version is reported and used as it is (the service still starts)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aio_pika
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from conftest import AMQP_HOST, VhostFactory, rabbitmqctl, wait_for
from wa_common.bus import (
    DROPPED_QUEUE,
    EXCHANGE_COMMANDS,
    EXCHANGE_DLX,
    EXCHANGE_EVENTS,
    QUERY_QUEUE,
    STATS_QUERY_QUEUE,
    Bus,
    DeadLetterLimits,
    Delivery,
    QueueSpec,
    Reject,
    dead_letter_queue,
    shard_queue,
)
from wa_common.bus.dead_letters import OTHER, dropped_from, queue_family
from wa_common.ids import new_id

pytestmark = pytest.mark.integration

LIMITS = DeadLetterLimits(max_length=5, max_bytes=1024 * 1024)


def drops(family: str) -> float:
    return REGISTRY.get_sample_value("wa_bus_dead_letters_dropped_total", {"queue": family}) or 0.0


def make_bus(url: str, name: str = "dlq-test") -> Bus:
    return Bus(
        url,
        service=name,
        shard_count=2,
        delivery_limit=2,
        prefetch=8,
        requeue_delay_s=0.01,
        publish_timeout_s=5,
        dead_letters=LIMITS,
    )


@pytest.fixture(scope="module")
def vhost(vhost_factory: VhostFactory) -> str:
    """A vhost of this module's own: its dead-letter queues have small bounds."""
    return vhost_factory()


@pytest.fixture
async def bus(vhost: str) -> AsyncIterator[Bus]:
    b = make_bus(f"amqp://guest:guest@{AMQP_HOST}/{vhost}")
    await b.connect()
    yield b
    await b.close(timeout_s=2)


async def drain(bus: Bus, queue: str) -> list[bytes]:
    """Take every message now in ``queue`` (acknowledged), oldest first."""
    channel = await bus.connection.channel()
    try:
        q = await channel.declare_queue(queue, passive=True)
        bodies = []
        while (msg := await q.get(no_ack=True, fail=False)) is not None:
            bodies.append(msg.body)
        return bodies
    finally:
        await channel.close()


def queue_arguments(vhost: str) -> dict[str, str]:
    listed = rabbitmqctl("-s", "list_queues", "-p", vhost, "name", "arguments")
    return dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)


async def test_a_full_dead_letter_queue_drops_its_oldest_and_counts_each_drop(bus: Bus, vhost: str) -> None:
    """Messages a handler rejects go to ``wa.queries.stats.dead``; past 5 the oldest go, the
    newest 5 stay, and the drops are counted under the queue's family."""
    args = queue_arguments(vhost)[dead_letter_queue(STATS_QUERY_QUEUE)]
    for expected in (
        '{"x-max-length",5}',
        f'"x-max-length-bytes",{1024 * 1024}',
        '{"x-overflow","drop-head"}',
        '{"x-dead-letter-exchange","wa.dlx.dropped"}',
    ):
        assert expected in args, args
    before = drops(STATS_QUERY_QUEUE)
    rejected: list[bytes] = []

    async def reject(delivery: Delivery) -> None:
        rejected.append(delivery.body)
        raise Reject("a request that can never succeed")

    # One at a time, so the dead-letter queue receives them in publishing order.
    consumer = await bus.consume(STATS_QUERY_QUEUE, reject, prefetch=1)
    sent = [f"request-{i}".encode() for i in range(8)]
    for body in sent:
        await bus.publish(EXCHANGE_COMMANDS, STATS_QUERY_QUEUE, body)
    await wait_for(lambda: len(rejected) == len(sent), timeout_s=15, message="all requests rejected")
    await wait_for(lambda: drops(STATS_QUERY_QUEUE) - before >= 3, timeout_s=15, message="3 drops counted")
    await consumer.cancel()
    assert await drain(bus, dead_letter_queue(STATS_QUERY_QUEUE)) == sent[3:]
    assert drops(STATS_QUERY_QUEUE) - before == 3
    assert await drain(bus, DROPPED_QUEUE) == []  # every drop notice was consumed


async def test_the_byte_bound_drops_too_and_shards_count_as_one_family(bus: Bus) -> None:
    before = drops("wa.shard")
    body = b"x" * (300 * 1024)  # 3 fit in 1 MiB, a 4th pushes the oldest out
    shard = shard_queue(1)
    for i in range(6):
        await bus.publish(EXCHANGE_DLX, shard, bytes([48 + i]) + body, message_id=f"big-{i}")
    await wait_for(lambda: drops("wa.shard") - before >= 3, timeout_s=15, message="3 drops counted")
    kept = await drain(bus, dead_letter_queue(shard))
    assert [b[:1] for b in kept] == [b"3", b"4", b"5"]
    assert drops("wa.shard") - before == 3
    assert REGISTRY.get_sample_value("wa_bus_dead_letters_dropped_total", {"queue": shard}) is None


async def test_an_unbounded_dead_letter_queue_of_an_older_version_is_reported_and_used(
    vhost_factory: VhostFactory,
) -> None:
    """An older version declared ``wa.queries.dead`` without bounds: redeclaring it with them is
    refused by the broker (PRECONDITION_FAILED). The bus must still start, name the queue and
    the remedy, bound every other dead-letter queue, and keep dead-lettering into the old one."""
    vhost = vhost_factory()
    url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    legacy = dead_letter_queue(QUERY_QUEUE)
    old = await aio_pika.connect(url)
    channel = await old.channel()
    await channel.declare_queue(legacy, durable=True, arguments={"x-queue-type": "classic"})
    await old.close()

    bus = make_bus(url, "dlq-legacy-test")
    with capture_logs() as logs:
        await bus.connect()
    try:
        assert bus.legacy_dead_letter_queues == [legacy]
        (error,) = [e for e in logs if e["log_level"] == "error"]
        assert error["queues"] == [legacy] and "rabbitmqctl set_policy" in error["remedy"]
        assert "delete_queue" in error["remedy"]
        args = queue_arguments(vhost)
        assert '"x-max-length"' not in args[legacy]
        assert '{"x-max-length",5}' in args[dead_letter_queue(STATS_QUERY_QUEUE)]
        assert '{"x-max-length",5}' in args[DROPPED_QUEUE]
        assert await bus.is_healthy()

        # The old queue still receives the dead letters of wa.queries.
        async def reject(_: Delivery) -> None:
            raise Reject("never succeeds")

        consumer = await bus.consume(QUERY_QUEUE, reject)
        await bus.publish(EXCHANGE_COMMANDS, "query", b"poison")

        async def dead_lettered() -> list[bytes]:
            return await drain(bus, legacy)

        assert await wait_for(dead_lettered, timeout_s=10, message="dead-lettered") == [b"poison"]
        await consumer.cancel()

        # A queue consumed by spec later gets a bounded dead-letter queue of its own.
        spec = QueueSpec(f"wa.test.{new_id().lower()}", ((EXCHANGE_EVENTS, "x.#"),))
        await (await bus.consume(spec, reject)).cancel()
        assert '{"x-max-length",5}' in queue_arguments(vhost)[dead_letter_queue(spec.name)]

        # The remedy the error gives works as written: the policy bounds the old queue at once.
        found = re.search(r"wa-dead-letters '([^']+)' '(\{[^']+\})'", error["remedy"])
        assert found is not None, error["remedy"]
        pattern, definition = found.groups()
        rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "wa-dead-letters", pattern, definition)
        before = drops(QUERY_QUEUE)
        for i in range(7):
            await bus.publish(EXCHANGE_DLX, QUERY_QUEUE, f"old-{i}".encode())
        await wait_for(lambda: drops(QUERY_QUEUE) - before >= 2, timeout_s=15, message="policy drops")
        assert await drain(bus, legacy) == [f"old-{i}".encode() for i in range(2, 7)]
        assert drops(QUERY_QUEUE) - before == 2
    finally:
        await bus.close(timeout_s=2)


async def test_every_service_declaring_counts_drops_once(bus: Bus, vhost: str) -> None:
    """Two buses (two services) consume the drop notices as competing consumers: a drop is
    counted once, not once per service."""
    other = make_bus(f"amqp://guest:guest@{AMQP_HOST}/{vhost}", "dlq-test-2")
    await other.connect()
    try:
        listed = rabbitmqctl("-s", "list_queues", "-p", vhost, "name", "consumers")
        assert f"{DROPPED_QUEUE}\t2" in listed.splitlines()
        before = drops(STATS_QUERY_QUEUE)
        for i in range(5 + 4):
            await bus.publish(EXCHANGE_DLX, STATS_QUERY_QUEUE, f"late-{i}".encode())
        await wait_for(lambda: drops(STATS_QUERY_QUEUE) - before >= 4, timeout_s=15, message="drops")
        await wait_for(lambda: _is_empty(bus, DROPPED_QUEUE), timeout_s=10, message="drop notices consumed")
        assert drops(STATS_QUERY_QUEUE) - before == 4
        assert len(await drain(bus, dead_letter_queue(STATS_QUERY_QUEUE))) == 5
    finally:
        await other.close(timeout_s=2)


async def _is_empty(bus: Bus, queue: str) -> bool:
    channel = await bus.connection.channel()
    try:
        q = await channel.declare_queue(queue, passive=True)
        return (q.declaration_result.message_count or 0) == 0
    finally:
        await channel.close()


def test_drop_labels_are_bounded() -> None:
    assert queue_family("wa.shard.63.dead") == "wa.shard"
    assert queue_family("wa.events.stats.dead") == "wa.events.stats"
    assert queue_family("wa.queries.dead") == "wa.queries"
    assert queue_family(f"wa.test.{new_id()}.dead") == OTHER
    death = {"queue": "wa.shard.7.dead", "reason": "maxlen", "count": 1}
    earlier = {"queue": "wa.shard.7", "reason": "delivery_limit", "count": 1}
    assert dropped_from({"x-death": [death, earlier]}) == "wa.shard"
    assert dropped_from({"x-death": [earlier]}) == OTHER
    assert dropped_from({}) == OTHER
    assert dropped_from({"x-death": "garbage"}) == OTHER
    assert dropped_from({"x-death": [{"queue": b"wa.queries.stats.dead", "reason": b"maxlen"}]}) == (
        "wa.queries.stats"
    )


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from wa_common.runtime import Runtime
    from wa_common.settings import ServiceSettings

    monkeypatch.setenv("WA_PROFILE", "embedded")
    monkeypatch.setenv("BUS_DEAD_LETTER_MAX_LENGTH", "123")
    monkeypatch.setenv("BUS_DEAD_LETTER_MAX_BYTES", str(2 * 1024 * 1024))
    bus = Runtime("t", ServiceSettings()).bus
    assert bus is not None and bus.dead_letters == DeadLetterLimits(123, 2 * 1024 * 1024)
    monkeypatch.delenv("BUS_DEAD_LETTER_MAX_LENGTH")
    monkeypatch.delenv("BUS_DEAD_LETTER_MAX_BYTES")
    bus = Runtime("t", ServiceSettings()).bus
    assert bus is not None and bus.dead_letters == DeadLetterLimits(10_000, 64 * 1024 * 1024)
