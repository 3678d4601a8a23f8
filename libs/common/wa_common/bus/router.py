"""One way to answer bus requests: typed handlers behind a router.

A service declares each command or query it answers with its payload model and its reply model::

    router = Router("stats")

    @router.route(StatsQuery.USER, payload=UserStatsQuery, reply=UserStats)
    async def user_stats(request: Request, body: UserStatsQuery) -> UserStats: ...

and consumes its queue with ``bus.consume(queue, router.consumer(bus))``. For every delivery the
router:

- decodes the request (a lone surrogate escape, which pydantic's JSON parser refuses but the
  standard library reads, is decoded too so the edge check can name the field); a malformed
  request is answered **400** when its caller waits for a reply (``reply_to``), and
  dead-lettered only when nobody does (a sender's bug worth keeping);
- drops a request whose deadline has passed (its caller has given up; outcome ``expired``);
- answers an unknown name 400, runs the service's ``guard`` (an edge check that may refuse the
  request), validates the payload (``ValidationError`` → 400 with ``details`` naming each field);
- runs the handler inside the service's ``around`` wrapper (e.g. the session worker's
  per-instance lock) and turns what it returns into a :class:`Reply`: a model is a 200 with the
  model's JSON (``Reply.success``), a :class:`Reply` is sent as it is (201, 202...);
- maps :class:`RequestError` (status, message, details) to a failure reply; any other exception
  goes to the service's ``on_error``, which returns a reply (e.g. 500) or re-raises so the bus
  redelivers the message (a store that is down);
- records ``requests{name, outcome}`` (``ok``, ``error``, ``expired``) and
  ``seconds{name}`` (prometheus-client; names are the declared ones, anything else is
  ``unknown``, so the labels stay bounded).

Shaped for batching: :meth:`Router.dispatch` takes a decoded request and returns its reply
without touching the transport, so a service can decode a window of deliveries, run their
handlers over one unit of work (group commit), then send each reply.

Source of the outcomes: DESIGN.md, "The bus" (a request is answered within its deadline or
dropped; only messages nobody waits for are dead-lettered).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from wa_common.bus.client import Bus, Delivery, Handler, Reject
from wa_common.bus.rpc import send_reply
from wa_common.logs import exception_fields, get_logger
from wa_common.metrics import REQUEST_SECONDS, REQUESTS_HANDLED
from wa_common.schemas import Reply, Request
from wa_common.schemas.wire import field_errors

log = get_logger(__name__)

R = TypeVar("R", bound=Request)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

UNKNOWN = "unknown"


class RequestError(Exception):
    """A request that fails with HTTP ``status``, a human-readable ``message`` and optional
    field ``details`` (``[{"field": ..., "message": ...}]``). Raised by handlers; the router
    answers it as a failure reply."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    def reply(self) -> Reply:
        return Reply.failure(self.status, self.message, self.details)


def invalid(exc: ValidationError) -> Reply:
    """The 400 reply for a payload that failed validation."""
    details = field_errors(exc.errors())
    return Reply.failure(400, f"Invalid request: {details[0]['field']}: {details[0]['message']}", details)


@dataclass(frozen=True)
class Route:
    """One declared request: its handler, payload model (``None``: no payload) and reply model."""

    name: str
    handler: Callable[..., Awaitable[Any]]
    payload: type[BaseModel] | None
    reply: type[BaseModel] | None


Around = Callable[[Request, Callable[[], Awaitable[Reply]]], Awaitable[Reply]]
Guard = Callable[[Request], Reply | None]
OnError = Callable[[Request, Exception], Reply]


async def _no_wrap(request: Request, run: Callable[[], Awaitable[Reply]]) -> Reply:
    return await run()


def _internal_error(request: Request, exc: Exception) -> Reply:
    log.error("request failed", name=request.name[:64], **exception_fields(exc))
    return Reply.failure(500, f"internal error while handling {request.name[:64]}")


class Router:
    """The requests one service answers (see the module docstring).

    ``kind``: the request class decoded (``Command``, ``Query`` or ``Request``). ``guard``: an
    edge check run before validation (returns a failure reply or ``None``). ``around``: wraps
    each handler run (locks). ``on_error``: maps an unexpected exception to a reply, or
    re-raises it so the bus redelivers the message (default: logged, answered 500).
    ``requests``/``seconds``: the metrics (labels ``name, outcome`` and ``name``); by default
    the shared ``wa_bus_requests_total`` and ``wa_bus_request_duration_seconds``.
    """

    def __init__(
        self,
        service: str,
        *,
        kind: type[Request] = Request,
        guard: Guard | None = None,
        around: Around | None = None,
        on_error: OnError | None = None,
        requests: Counter | None = None,
        seconds: Histogram | None = None,
    ) -> None:
        self.service = service
        self.kind = kind
        self.routes: dict[str, Route] = {}
        self.guard = guard
        self.around: Around = around or _no_wrap
        self.on_error: OnError = on_error or _internal_error
        self._requests = (requests or REQUESTS_HANDLED).labels
        self._seconds = (seconds or REQUEST_SECONDS).labels

    # --- declaring ----------------------------------------------------------------------------

    def add(
        self,
        name: str,
        handler: Callable[..., Awaitable[Any]],
        *,
        payload: type[BaseModel] | None = None,
        reply: type[BaseModel] | None = None,
    ) -> None:
        """Declare ``name``: ``handler(request)`` or, with a payload model,
        ``handler(request, payload)``. Raises ``ValueError`` for a name declared twice."""
        if name in self.routes:
            raise ValueError(f"{name!r} is declared twice")
        self.routes[name] = Route(str(name), handler, payload, reply)

    def route(
        self, name: str, *, payload: type[BaseModel] | None = None, reply: type[BaseModel] | None = None
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add`."""

        def decorate(handler: F) -> F:
            self.add(name, handler, payload=payload, reply=reply)
            return handler

        return decorate

    def include(self, other: Router) -> None:
        """Declare every route of ``other`` here too (a service built from several modules)."""
        for route in other.routes.values():
            self.add(route.name, route.handler, payload=route.payload, reply=route.reply)

    # --- answering ----------------------------------------------------------------------------

    def label(self, name: str) -> str:
        """``name`` as a metric label: declared names only."""
        return name if name in self.routes else UNKNOWN

    async def dispatch(self, request: Request) -> Reply | None:
        """The reply to a decoded ``request``; ``None`` when its deadline has passed (drop it).

        Never raises for a request's own faults (they are replies); ``on_error`` decides for
        anything else.
        """
        label = self.label(request.name)
        if request.expired():
            self._requests(label, "expired").inc()
            log.info("expired request dropped", service=self.service, name=label, request_id=request.id[:64])
            return None
        started = time.perf_counter()
        reply = await self._answer(request)
        self._seconds(label).observe(time.perf_counter() - started)
        self._requests(label, "ok" if reply.ok else "error").inc()
        return reply

    async def _answer(self, request: Request) -> Reply:
        route = self.routes.get(request.name)
        if route is None:
            return Reply.failure(400, f"unknown request {request.name[:64]!r}")
        if self.guard is not None:
            refused = self.guard(request)
            if refused is not None:
                return refused

        async def run() -> Reply:
            try:
                if route.payload is None:
                    result = await route.handler(request)
                else:
                    result = await route.handler(request, route.payload.model_validate(request.payload))
            except RequestError as exc:
                return exc.reply()
            except ValidationError as exc:
                return invalid(exc)
            return _as_reply(route, result)

        try:
            return await self.around(request, run)
        except RequestError as exc:
            return exc.reply()
        except Exception as exc:
            return self.on_error(request, exc)

    def decode(self, body: bytes) -> Request:
        """The request in ``body``; raises ``ValidationError`` when it is none."""
        try:
            return self.kind.from_bytes(body)
        except ValidationError as exc:
            first = exc
        try:
            return self.kind.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):
            raise first from None

    def consumer(self, bus: Bus) -> Handler:
        """The bus handler: decode, :meth:`dispatch`, reply (outcomes: module docstring)."""

        async def on_delivery(delivery: Delivery) -> None:
            try:
                request = self.decode(delivery.body)
            except ValidationError as exc:
                self._requests(UNKNOWN, "error").inc()
                if not delivery.reply_to:
                    raise Reject(f"malformed request: {exc.error_count()} errors") from None
                log.info("malformed request answered 400", service=self.service, errors=exc.error_count())
                await send_reply(bus, delivery, Reply.failure(400, "malformed request"))
                return
            reply = await self.dispatch(request)
            if reply is not None:
                await send_reply(bus, delivery, _encodable(reply))

        return on_delivery


def _as_reply(route: Route, result: Any) -> Reply:
    if isinstance(result, Reply):
        return result
    if route.reply is not None and result is not None and not isinstance(result, route.reply):
        raise TypeError(
            f"{route.name}: handler returned {type(result).__name__}, declared {route.reply.__name__}"
        )
    return Reply.success(result)


def _encodable(reply: Reply) -> Reply:
    try:
        reply.to_bytes()
    except PydanticSerializationError:
        # Text that cannot be encoded (an unpaired surrogate stored before the edge check).
        return Reply.failure(500, "the answer contains text that cannot be encoded")
    return reply
