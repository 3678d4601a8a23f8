"""Wiring of the gateway's authentication layer into the app and the runtime."""

from __future__ import annotations

from fastapi import FastAPI

from wa_common.bus import EXCHANGE_EVENTS, Consumer, Delivery
from wa_common.logs import get_logger
from wa_common.runtime import Runtime
from wa_common.schemas import Event, EventType
from wa_gateway.auth.client import AuthUnavailable
from wa_gateway.auth.layer import AuthLayer
from wa_gateway.auth.routes import router
from wa_gateway.auth.settings import AuthClientSettings
from wa_gateway.ratelimit import RateLimiter

log = get_logger(__name__)

INVALIDATING_EVENTS = (EventType.API_KEY_ROTATED, EventType.USER_UPDATED, EventType.USER_DELETED)


def setup_auth(app: FastAPI, runtime: Runtime, settings: AuthClientSettings, rate: RateLimiter) -> None:
    """Install the auth layer (admitting callers within ``rate``, the per-user request limit):
    ``app.state.auth_layer``, the identity routes, and hooks that

    - at start: load auth's JWKS (a failure is logged; keys are fetched again on first use) and
      consume ``api_key.rotated``/``user.updated``/``user.deleted`` from ``wa.events`` on an
      exclusive queue (``wa.live.gateway-auth.<id>``) to drop the user's cached identity, and
      clear the whole cache after a reconnection to the broker (events may have been missed);
    - at stop: close the HTTP client (the consumer is cancelled by the bus).
    """
    layer = AuthLayer(settings, rate)
    app.state.auth_layer = layer
    app.include_router(router)

    async def on_event(delivery: Delivery) -> None:
        try:
            event = Event.from_bytes(delivery.body)
        except ValueError:
            log.warning("ignored a malformed user event", routing_key=delivery.routing_key)
            return
        user_id = event.user_id or str(event.data.get("userId") or "")
        if user_id:
            dropped = layer.cache.invalidate_user(user_id)
            log.info("identity cache dropped", event_type=event.type, user_id=user_id, entries=dropped)
        else:
            layer.cache.clear()

    consumer: list[Consumer] = []

    async def start() -> None:
        try:
            await layer.keys.refresh()
        except AuthUnavailable as exc:
            log.warning("could not load auth's signing keys at start; will retry on demand", error=str(exc))
        if runtime.bus is not None:
            bindings = [(EXCHANGE_EVENTS, f"{event_type}.#") for event_type in INVALIDATING_EVENTS]
            consumer.append(
                await runtime.bus.consume_transient(bindings, on_event, name_prefix="wa.live.gateway-auth")
            )
            # Events published while the connection was down are lost with the exclusive queue:
            # forget everything cached once it is back.
            runtime.bus.connection.reconnect_callbacks.add(lambda *_: layer.cache.clear())

    async def stop() -> None:
        await layer.client.close()

    runtime.on_start(start)
    runtime.on_stop(stop)
