"""Several events in one broker message (issue 15: "fewer, fuller broker messages").

Wire format version 2 of ``wa.events`` (version 1: one event per message, still published for a
lone event and always understood):

- content type :data:`BATCH_CONTENT_TYPE`; header ``x-event-type`` (every event of a batch has
  that type) and ``x-wa-events`` (how many);
- routing key ``<type>.batch``: bindings by type (``<type>.#``, ``#``) still match; a binding by
  instance does not exist on ``wa.events``;
- body: one line per event, ``<event id> <routing key> <event JSON>`` joined by ``\\n`` (the
  event's JSON has no raw newline; ids and routing keys have no space), so a consumer splits it
  without parsing JSON and still knows each event's id and routing key.

Consumers of this version unpack a batch in :class:`~wa_common.bus.client.Consumer` and hand
each event to the handler as its own :class:`~wa_common.bus.client.Delivery`; handlers do not
change. Rolling upgrade: consumers understand both versions; a publisher built before this
version's consumers run must be kept at one event per message (``BUS_EVENT_BATCH_MAX=1``) until
every consumer is upgraded, or its batches are dead-lettered by old consumers (kept in
``<queue>.dead``, not lost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wa_common.schemas import Event

BATCH_CONTENT_TYPE = "application/vnd.wa.events+lines"
COUNT_HEADER = "x-wa-events"
TYPE_HEADER = "x-event-type"


@dataclass(frozen=True)
class Part:
    """One event of a batch, as bytes: its id, routing key (``<type>.<instance>``) and JSON."""

    id: str
    routing_key: str
    body: bytes


def by_type(events: Iterable[Event], max_size: int) -> list[list[Event]]:
    """``events`` in batches of one type each, at most ``max_size`` long, in first-seen order
    (events of one type keep their order)."""
    groups: dict[str, list[list[Event]]] = {}
    order: list[list[Event]] = []
    for event in events:
        chunks = groups.setdefault(event.type, [])
        if not chunks or len(chunks[-1]) >= max_size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(event)
    return order


def encode(events: list[Event]) -> bytes:
    """The body of a batch of ``events`` (one type)."""
    return b"\n".join(f"{e.id} {e.routing_key} ".encode() + e.to_bytes() for e in events)


def decode(body: bytes) -> list[Part]:
    """The events of a batch body; raises ``ValueError`` when a line is not ``id key json``."""
    parts = []
    for line in body.split(b"\n"):
        event_id, key, raw = line.split(b" ", 2)
        if not raw.startswith(b"{"):
            raise ValueError("an event of a batch is not a JSON object")
        parts.append(Part(event_id.decode(), key.decode(), raw))
    return parts
