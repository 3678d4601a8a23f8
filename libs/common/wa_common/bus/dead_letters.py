"""Bounded dead-letter queues: their settings, and counting what they drop.

Every ``<queue>.dead`` holds at most ``BUS_DEAD_LETTER_MAX_LENGTH`` messages and
``BUS_DEAD_LETTER_MAX_BYTES`` bytes of bodies; when full, the broker drops its oldest message
(``x-overflow: drop-head``) and dead-letters it once more, to the fanout exchange
``wa.dlx.dropped`` and the queue ``wa.dead.dropped`` (see :mod:`wa_common.bus.topology`). Every
service's :class:`~wa_common.bus.Bus` consumes that queue (competing consumers, so each drop is
counted once in the cluster) and counts each drop in ``wa_bus_dead_letters_dropped_total`` by
queue family (``wa.shard`` for every shard, the queue name for the others, ``other`` for
anything else: bounded label values).

The limits are queue arguments, identical in every service: the shared, unprefixed settings of
``wa_common.settings.ServiceSettings``, handed to the bus by ``wa_common.runtime.Runtime``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter

from wa_common.bus.topology import (
    QUERY_QUEUE,
    SERVICE_QUEUES,
    STATS_QUERY_QUEUE,
    WEBHOOKS_QUERY_QUEUE,
)
from wa_common.metrics import queue_label

DEAD_LETTERS_DROPPED = Counter(
    "wa_bus_dead_letters_dropped_total",
    "Dead letters dropped (oldest first) from a full <queue>.dead, by queue family "
    "(BUS_DEAD_LETTER_MAX_LENGTH / BUS_DEAD_LETTER_MAX_BYTES reached).",
    ["queue"],
)

# Label values: the families of the queues that have a dead-letter queue.
QUEUE_FAMILIES = frozenset(
    {
        "wa.shard",
        QUERY_QUEUE,
        STATS_QUERY_QUEUE,
        WEBHOOKS_QUERY_QUEUE,
        *(s.name for s in SERVICE_QUEUES.values()),
    }
)
OTHER = "other"


def queue_family(queue: str) -> str:
    """Bounded label of a queue or of its dead-letter queue (``wa.shard.7.dead`` → ``wa.shard``)."""
    if queue.endswith(".dead"):
        queue = queue[: -len(".dead")]
    family = queue_label(queue)
    return family if family in QUEUE_FAMILIES else OTHER


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def dropped_from(headers: Mapping[str, Any]) -> str:
    """Family of the dead-letter queue a drop notice comes from, read from its ``x-death``
    header (the entry with reason ``maxlen``); ``other`` when the header says nothing usable."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple):
        for death in deaths:
            if isinstance(death, Mapping) and _text(death.get("reason", "")) == "maxlen":
                return queue_family(_text(death.get("queue", "")))
    return OTHER


def count_drop(headers: Mapping[str, Any]) -> str:
    """Count one drop notice; returns the family it was counted for."""
    family = dropped_from(headers)
    DEAD_LETTERS_DROPPED.labels(family).inc()
    return family
