"""The bus topology, declared in this one place (DESIGN.md, "The bus").

Exchanges:
- ``wa.commands`` (direct): commands to shard queues ``wa.shard.<k>`` (routing key = queue name),
  session queries to ``wa.queries`` (routing key ``query``), stats queries to
  ``wa.queries.stats`` and webhook-dispatcher queries to ``wa.queries.webhooks`` (routing key =
  queue name).
- ``wa.events`` (topic): events with routing key ``<event type>.<instance id>``.
- ``wa.sim`` (topic): the simulated WhatsApp network shared by simulator engines.
- ``wa.dlx`` (direct): dead letters; each durable queue ``Q`` dead-letters to ``Q.dead``.
- ``wa.dlx.dropped`` (fanout): dead letters dropped from a full ``Q.dead``, into the queue
  ``wa.dead.dropped``, where every service's bus counts them
  (``wa_bus_dead_letters_dropped_total``, see :mod:`wa_common.bus.dead_letters`).

Durable work queues are quorum queues with a delivery limit (``x-delivery-limit``) and
at-least-once dead-lettering, so a message whose handler keeps failing is moved to its
dead-letter queue, not lost (unless that queue is full, see below).
Shard queues are also single-active-consumer (a second line of defence behind shard leases).

Dead-letter queues are bounded (:class:`DeadLetterLimits`: ``BUS_DEAD_LETTER_MAX_LENGTH``
messages and ``BUS_DEAD_LETTER_MAX_BYTES`` bytes of bodies) with ``x-overflow: drop-head``: when
one is full, its *oldest* message is dropped to make room (dead-lettered once more, to
``wa.dlx.dropped``, and counted), so a flood of failing messages — which any API user may be able
to cause — can never fill the broker's disk, and the newest failures stay there to inspect.
``wa.dead.dropped`` is bounded the same way (it only carries drop notices to count; a notice
dropped from it is lost uncounted, which needs every service down while a DLQ overflows).

Every declaration of a queue must use the same arguments, so all services declare through
:func:`declare_topology` with the same ``WA_SHARDS``, ``BUS_DELIVERY_LIMIT`` and
``BUS_DEAD_LETTER_*``. A dead-letter queue that already exists with other arguments (declared by
an older version, unbounded, or with other ``BUS_DEAD_LETTER_*`` values) cannot be redeclared
(the broker answers PRECONDITION_FAILED): it is used as it is, and an error names it and the
remedy (:func:`legacy_remedy`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed

from wa_common.schemas.events import WEBHOOK_EVENT_TYPES, EventType

EXCHANGE_COMMANDS = "wa.commands"
EXCHANGE_EVENTS = "wa.events"
EXCHANGE_SIM = "wa.sim"
EXCHANGE_DLX = "wa.dlx"
EXCHANGE_DLX_DROPPED = "wa.dlx.dropped"
DROPPED_QUEUE = "wa.dead.dropped"
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


DEFAULT_DEAD_LETTER_MAX_LENGTH = 10_000
DEFAULT_DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DeadLetterLimits:
    """Bounds of every dead-letter queue (and of ``wa.dead.dropped``); queue arguments, so the
    same in every service (``BUS_DEAD_LETTER_MAX_LENGTH``, ``BUS_DEAD_LETTER_MAX_BYTES``).

    ``max_bytes`` counts message bodies; keep it above the largest message the bus carries (a
    bigger one would push out everything, itself included).
    """

    max_length: int = DEFAULT_DEAD_LETTER_MAX_LENGTH
    max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES

    def _bounded(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-max-length": self.max_length,
            "x-max-length-bytes": self.max_bytes,
            "x-overflow": "drop-head",
        }

    def dead_letter_arguments(self) -> dict[str, Any]:
        """Arguments of ``<queue>.dead``: bounded, oldest dropped first, drops to
        ``wa.dlx.dropped`` (to be counted)."""
        return {**self._bounded(), "x-dead-letter-exchange": EXCHANGE_DLX_DROPPED}

    def dropped_arguments(self) -> dict[str, Any]:
        """Arguments of ``wa.dead.dropped`` (bounded too; what it drops is gone)."""
        return self._bounded()


def legacy_remedy(limits: DeadLetterLimits) -> str:
    """What an operator does about dead-letter queues that exist with other arguments."""
    policy = (
        f'{{"max-length":{limits.max_length},"max-length-bytes":{limits.max_bytes},'
        f'"overflow":"drop-head","dead-letter-exchange":"{EXCHANGE_DLX_DROPPED}"}}'
    )
    return (
        "bound them with a policy, at once and without a restart: rabbitmqctl set_policy -p <vhost> "
        f"--apply-to queues wa-dead-letters '\\.dead$' '{policy}' (then this error at each start is "
        "expected); or, once every service runs this version, inspect or move a queue's messages, "
        "delete it (rabbitmqctl delete_queue -p <vhost> <name>) and restart one service, which "
        "declares it bounded"
    )


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue, its bindings ``(exchange, routing key)`` and its dead-letter queue."""

    name: str
    bindings: tuple[tuple[str, str], ...] = ()
    single_active_consumer: bool = False
    retired: tuple[tuple[str, str], ...] = ()
    """Bindings an earlier release declared and this one removes (unbinding a binding that does
    not exist is not an error)."""
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


def _types(*types: str) -> tuple[tuple[str, str], ...]:
    """Bindings of ``wa.events`` for events of ``types`` (routing keys ``<type>.<instance>`` and,
    for batches, ``<type>.batch``: see :mod:`wa_common.bus.batches`)."""
    return tuple((EXCHANGE_EVENTS, f"{t}.#") for t in sorted(types))


INSTANCE_EVENT_TYPES = (EventType.INSTANCE_CREATED, EventType.INSTANCE_UPDATED, EventType.INSTANCE_DELETED)
STATS_EVENT_TYPES: frozenset[str] = frozenset(
    {
        EventType.MESSAGE_SENT,
        EventType.MESSAGE_RECEIVED,
        EventType.API_USAGE,
        EventType.WEBHOOK_DELIVERED,
        EventType.CONNECTED,
        EventType.DISCONNECTED,
        EventType.USER_CREATED,
        EventType.USER_UPDATED,
        EventType.USER_DELETED,
        *INSTANCE_EVENT_TYPES,
    }
)
"""What stats counts or keeps a replica of (``wa_stats.handlers``; a test keeps them equal)."""

# Per-service event queues, each bound only to the event types it uses (DESIGN.md, "The bus"):
# stats never sees receipts, the dispatcher never sees user or usage events. Releases before
# issue 15 bound both to ``#``; that binding is removed when the queue is declared.
SERVICE_QUEUES: dict[str, QueueSpec] = {
    "webhooks": QueueSpec(
        "wa.events.webhooks",
        _types(*WEBHOOK_EVENT_TYPES, *INSTANCE_EVENT_TYPES),
        retired=((EXCHANGE_EVENTS, "#"),),
    ),
    "stats": QueueSpec("wa.events.stats", _types(*STATS_EVENT_TYPES), retired=((EXCHANGE_EVENTS, "#"),)),
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


class _ScratchChannel:
    """Plain (not robust) channels for declarations the broker may refuse: a refused declare
    closes its channel, which the service's robust channels must never see. One channel is reused
    until the broker closes it."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: aio_pika.Channel | None = None

    async def get(self) -> aio_pika.Channel:
        if self._channel is None or self._channel.is_closed:
            self._channel = aio_pika.Channel(self._connection, publisher_confirms=False)
            await self._channel.initialize()
        return self._channel

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None


async def _declare_bounded(
    scratch: _ScratchChannel, name: str, arguments: dict[str, Any], binding: tuple[str, str]
) -> bool:
    """Declare the durable classic queue ``name`` with ``arguments`` and bind it to ``binding``
    (exchange, routing key); returns False if it exists with other arguments (then it is bound
    and used as it is)."""
    matched = True
    try:
        queue = await (await scratch.get()).declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed:
        matched = False
        queue = await (await scratch.get()).declare_queue(name, passive=True)
    await queue.bind(binding[0], routing_key=binding[1])
    return matched


async def declare_dead_letter_queues(
    connection: AbstractConnection, queues: list[str], limits: DeadLetterLimits
) -> list[str]:
    """Declare ``<queue>.dead`` of each of ``queues``, bounded by ``limits`` and bound to
    ``wa.dlx`` with routing key ``<queue>``; returns the names of those that exist with other
    arguments (kept and used as they are).

    Dead-letter queues are classic durable queues: they only hold what failed, and a quorum queue
    each would double the broker's Raft members for no gain.
    """
    scratch = _ScratchChannel(connection)
    legacy: list[str] = []
    try:
        for queue in queues:
            dead = dead_letter_queue(queue)
            if not await _declare_bounded(
                scratch, dead, limits.dead_letter_arguments(), (EXCHANGE_DLX, queue)
            ):
                legacy.append(dead)
    finally:
        await scratch.close()
    return legacy


async def declare_queue(channel: AbstractChannel, spec: QueueSpec, delivery_limit: int) -> AbstractQueue:
    """Declare ``spec`` and its bindings (idempotent); returns the queue.

    Its dead-letter queue is declared by :func:`declare_dead_letter_queues` first (the bus does).
    """
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments(delivery_limit))
    for exchange_name, key in spec.bindings:
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        await queue.bind(exchange, routing_key=key)
    for exchange_name, key in spec.retired:
        await queue.unbind(await channel.get_exchange(exchange_name, ensure=False), routing_key=key)
    return queue


async def declare_exchanges(channel: AbstractChannel) -> None:
    await channel.declare_exchange(EXCHANGE_COMMANDS, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(EXCHANGE_EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EXCHANGE_SIM, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EXCHANGE_DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(EXCHANGE_DLX_DROPPED, aio_pika.ExchangeType.FANOUT, durable=True)


async def declare_topology(
    connection: AbstractConnection,
    channel: AbstractChannel,
    *,
    shard_count: int,
    delivery_limit: int,
    dead_letters: DeadLetterLimits,
) -> list[str]:
    """Declare every exchange and durable queue of the system (idempotent, same args everywhere).

    Exchanges and work queues are declared on ``channel`` (robust: aio-pika declares them again
    after a reconnection); the bounded classic queues on throw-away channels of ``connection``.
    Returns the names of the dead-letter queues (and ``wa.dead.dropped``) that already existed
    with other arguments: they are used as they are, and the caller reports them.
    """
    await declare_exchanges(channel)
    scratch = _ScratchChannel(connection)
    try:
        legacy = []
        if not await _declare_bounded(
            scratch, DROPPED_QUEUE, dead_letters.dropped_arguments(), (EXCHANGE_DLX_DROPPED, "")
        ):
            legacy.append(DROPPED_QUEUE)
    finally:
        await scratch.close()
    specs = all_queue_specs(shard_count)
    legacy += await declare_dead_letter_queues(connection, [s.name for s in specs], dead_letters)
    for spec in specs:
        await declare_queue(channel, spec, delivery_limit)
    return legacy
