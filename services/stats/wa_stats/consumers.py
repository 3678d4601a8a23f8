"""Bus consumers of the stats service: every event (``wa.events.stats``) and the stats queries
(``wa.queries.stats``). Thin: parsing and acknowledgement here, logic in :mod:`wa_stats.service`.
"""

from __future__ import annotations

from pydantic import ValidationError

from wa_common.bus import SERVICE_QUEUES, STATS_QUERY_QUEUE, Bus, Consumer, Delivery, Reject, send_reply
from wa_common.logs import get_logger
from wa_common.schemas import Event, Query, Reply
from wa_stats.service import MalformedEvent, StatsService

log = get_logger(__name__)


class StatsConsumers:
    """Starts and stops the two consumers of one stats process."""

    def __init__(self, bus: Bus, service: StatsService) -> None:
        self.bus = bus
        self.service = service
        self._consumers: list[Consumer] = []

    async def on_event(self, delivery: Delivery) -> None:
        """Count one event. Malformed → dead-lettered at once; store errors → redelivered."""
        try:
            event = Event.from_bytes(delivery.body)
        except ValidationError as exc:
            raise Reject(f"malformed event: {exc.error_count()} validation errors") from exc
        try:
            await self.service.handle_event(event)
        except MalformedEvent as exc:
            raise Reject(str(exc)) from exc

    async def on_query(self, delivery: Delivery) -> None:
        """Answer one query with a :class:`Reply` (dropped if its deadline has passed)."""
        try:
            query = Query.from_bytes(delivery.body)
        except ValidationError:
            await send_reply(self.bus, delivery, Reply.failure(400, "malformed stats query"))
            return
        if query.expired():
            log.info("expired stats query dropped", query=query.name, request_id=query.id)
            return
        await send_reply(self.bus, delivery, await self.service.answer(query))

    async def start(self) -> None:
        self._consumers.append(await self.bus.consume(SERVICE_QUEUES["stats"], self.on_event))
        self._consumers.append(await self.bus.consume(STATS_QUERY_QUEUE, self.on_query))

    async def stop(self, timeout_s: float) -> None:
        """Stop deliveries and wait for in-flight handlers (before the store is closed)."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.cancel(timeout_s)
