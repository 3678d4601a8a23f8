"""The bus topology, declared in this one place (DESIGN.md, "The bus").

Exchanges:
- ``wa.commands`` (direct): commands to shard queues ``wa.shard.<k>`` (routing key = queue name),
  session queries to ``wa.queries`` (routing key ``query``), stats queries to
  ``wa.queries.stats`` and webhook-dispatcher queries to ``wa.queries.webhooks`` (routing key =
  queue name).
- ``wa.events`` (topic): events with routing key ``<event type>.<instance id>``.
- ``wa.sim`` (topic): the simulated WhatsApp network shared by simulator engines.
- ``wa.dlx`` (direct): dead letters; each durable queue ``Q`` dead-letters to ``Q.dead``.

Durable work queues are quorum queues with a delivery limit (``x-delivery-limit``) and
at-least-once dead-lettering, so a message whose handler keeps failing is moved, not lost.
Shard queues are also single-active-consumer (a second line of defence behind shard leases).
Every declaration of a queue must use the same arguments, so all services declare through
:func:`declare_topology` with the same ``WA_SHARDS`` and ``BUS_DELIVERY_LIMIT``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

EXCHANGE_COMMANDS = "wa.commands"
EXCHANGE_EVENTS = "wa.events"
EXCHANGE_SIM = "wa.sim"
EXCHANGE_DLX = "wa.dlx"
QUERY_QUEUE = "wa.queries"
QUERY_ROUTING_KEY = "query"
# Queries answered by the stats service and by the webhook dispatcher (competing consumers).
STATS_QUERY_QUEUE = "wa.queries.stats"
WEBHOOKS_QUERY_QUEUE = "wa.queries.webhooks"


def shard_queue(shard: int) -> str:
    """Queue name of virtual shard ``shard`` (``wa.shard.<k>``), also its routing key."""
    return f"wa.shard.{shard}"


def shard_for(instance_id: str, shard_count: int) -> int:
    """Stable shard of an instance: first 8 bytes of SHA-256 of its id, modulo ``shard_count``.

    Stable across processes and Python versions (unlike ``hash()``), so every gateway and worker
    agrees on it.
    """
    digest = hashlib.sha256(instance_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def dead_letter_queue(queue: str) -> str:
    """Name of the dead-letter queue of ``queue``."""
    return f"{queue}.dead"


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue, its bindings ``(exchange, routing key)`` and its dead-letter queue."""

    name: str
    bindings: tuple[tuple[str, str], ...] = ()
    single_active_consumer: bool = False
    extra_arguments: dict[str, Any] = field(default_factory=dict)

    def arguments(self, delivery_limit: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": EXCHANGE_DLX,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        args.update(self.extra_arguments)
        return args


# Per-service event queues. A service declares more bindings on its own queue only here.
SERVICE_QUEUES: dict[str, QueueSpec] = {
    "webhooks": QueueSpec("wa.events.webhooks", ((EXCHANGE_EVENTS, "#"),)),
    "stats": QueueSpec("wa.events.stats", ((EXCHANGE_EVENTS, "#"),)),
    "session-worker": QueueSpec("wa.events.session-worker", ((EXCHANGE_EVENTS, "user.deleted.#"),)),
}


def shard_specs(shard_count: int) -> list[QueueSpec]:
    return [
        QueueSpec(shard_queue(k), ((EXCHANGE_COMMANDS, shard_queue(k)),), single_active_consumer=True)
        for k in range(shard_count)
    ]


QUERY_SPEC = QueueSpec(QUERY_QUEUE, ((EXCHANGE_COMMANDS, QUERY_ROUTING_KEY),))
STATS_QUERY_SPEC = QueueSpec(STATS_QUERY_QUEUE, ((EXCHANGE_COMMANDS, STATS_QUERY_QUEUE),))
WEBHOOKS_QUERY_SPEC = QueueSpec(WEBHOOKS_QUERY_QUEUE, ((EXCHANGE_COMMANDS, WEBHOOKS_QUERY_QUEUE),))


def all_queue_specs(shard_count: int) -> list[QueueSpec]:
    return [
        *shard_specs(shard_count),
        QUERY_SPEC,
        STATS_QUERY_SPEC,
        WEBHOOKS_QUERY_SPEC,
        *SERVICE_QUEUES.values(),
    ]


async def declare_queue(channel: AbstractChannel, spec: QueueSpec, delivery_limit: int) -> AbstractQueue:
    """Declare ``spec`` with its dead-letter queue and bindings (idempotent); returns the queue."""
    dlx = await channel.get_exchange(EXCHANGE_DLX, ensure=False)
    # Dead-letter queues are classic durable queues: they only hold what failed, and a quorum
    # queue each would double the broker's Raft members for no gain.
    dead = await channel.declare_queue(
        dead_letter_queue(spec.name), durable=True, arguments={"x-queue-type": "classic"}
    )
    await dead.bind(dlx, routing_key=spec.name)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments(delivery_limit))
    for exchange_name, key in spec.bindings:
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        await queue.bind(exchange, routing_key=key)
    return queue


async def declare_exchanges(channel: AbstractChannel) -> None:
    await channel.declare_exchange(EXCHANGE_COMMANDS, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(EXCHANGE_EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EXCHANGE_SIM, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EXCHANGE_DLX, aio_pika.ExchangeType.DIRECT, durable=True)


async def declare_topology(channel: AbstractChannel, *, shard_count: int, delivery_limit: int) -> None:
    """Declare every exchange and durable queue of the system (idempotent, same args everywhere)."""
    await declare_exchanges(channel)
    for spec in all_queue_specs(shard_count):
        await declare_queue(channel, spec, delivery_limit)
