"""Wiring of the gateway's authentication layer into the app and the runtime."""

from __future__ import annotations

import asyncio

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
# Seconds auth may stay silent after the gateway started before that is logged as a warning
# (``make run`` and the test harness start every service at once: auth answering a few seconds
# after the gateway is the normal order, not a failure).
AUTH_START_GRACE_S = 30.0
# Delays between background attempts to fetch the keys (doubling up to the maximum).
KEYS_RETRY_FIRST_S = 0.5
KEYS_RETRY_MAX_S = 5.0


def setup_auth(
    app: FastAPI,
    runtime: Runtime,
    settings: AuthClientSettings,
    rate: RateLimiter,
    *,
    start_grace_s: float = AUTH_START_GRACE_S,
) -> None:
    """Install the auth layer (admitting callers within ``rate``, the per-user request limit):
    ``app.state.auth_layer``, the identity routes, and hooks that

    - at start: load auth's JWKS. When auth is not up yet (nothing answers: the usual order when
      every service starts at once) this is logged at INFO ("fetched on first use") and the keys
      are fetched in the background until auth answers (a request that needs them meanwhile
      fetches them itself, and logs a warning and answers 503 if that fails). A warning is logged
      only if auth has still not answered after ``start_grace_s`` seconds, or at once when auth
      answers with a failure (5xx, internal token refused: a misconfiguration, not an ordering).
      Then consume ``api_key.rotated``/``user.updated``/``user.deleted`` from ``wa.events`` on an
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

    def auth_refused(exc: AuthUnavailable) -> None:
        log.warning(
            "auth answered but did not give its signing keys; tokens cannot be verified until it does",
            auth_url=settings.auth_url,
            error=str(exc),
        )

    async def keys_when_auth_answers(started: float, warned: bool) -> None:
        """Fetch the keys until auth answers (or a request fetched them first)."""
        loop = asyncio.get_running_loop()
        delay = KEYS_RETRY_FIRST_S
        while not layer.keys.loaded:
            await asyncio.sleep(delay)
            delay = min(delay * 2, KEYS_RETRY_MAX_S)
            try:
                await layer.keys.ensure_loaded()
            except AuthUnavailable as exc:
                waited = loop.time() - started
                if warned:
                    continue
                if exc.answered:
                    auth_refused(exc)
                    warned = True
                elif waited >= start_grace_s:
                    log.warning(
                        "auth still not answering; tokens cannot be verified until it does",
                        auth_url=settings.auth_url,
                        waited_s=round(waited),
                        error=str(exc),
                    )
                    warned = True

    async def start() -> None:
        started = asyncio.get_running_loop().time()
        try:
            await layer.keys.ensure_loaded()
        except AuthUnavailable as exc:
            if exc.answered:
                auth_refused(exc)
            else:
                log.info(
                    "auth not answering yet; its signing keys will be fetched on first use",
                    auth_url=settings.auth_url,
                    reason=str(exc),
                )
            runtime.tasks.spawn(keys_when_auth_answers(started, exc.answered), name="gateway-auth-keys")
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
