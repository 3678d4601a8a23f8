"""The gateway's clients of the other services, over the bus (request/reply with a deadline).

- Session workers: :class:`~wa_common.schemas.session.SessionCommand` to the instance's shard
  queue ``wa.shard.<shard_for(instance_id)>``, :class:`~wa_common.schemas.session.SessionQuery`
  to ``wa.queries``.
- Stats: queries on ``wa.queries.stats``; webhook dispatcher: queries on ``wa.queries.webhooks``.

Every request carries the caller (user id, role); the owner of the data answers 404 for what is
not the caller's. A reply's ``data`` is the reference's response body and its ``status`` the HTTP
status: :func:`answer` hands both to the route (or raises the JSON error), and FastAPI validates
the body against the route's ``response_model`` (a ``wa_common.schemas`` model, the one the
service built it with). No reply by the deadline raises ``RequestTimeout`` and no consumer
``PublishError``; ``errors.py`` maps both to 503.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from fastapi import Response
from fastapi.exceptions import ResponseValidationError
from pydantic import BaseModel, ValidationError

from wa_common.bus import RpcClient
from wa_common.bus.topology import (
    EXCHANGE_COMMANDS,
    QUERY_ROUTING_KEY,
    STATS_QUERY_QUEUE,
    WEBHOOKS_QUERY_QUEUE,
    shard_for,
    shard_queue,
)
from wa_common.runtime import Runtime
from wa_common.schemas import Caller, Command, Query, Reply, utcnow
from wa_gateway.errors import ApiError
from wa_gateway.settings import GatewaySettings

M = TypeVar("M", bound=BaseModel)


class Backend:
    """Request/reply with the session workers, stats and the webhook dispatcher."""

    def __init__(self, runtime: Runtime, settings: GatewaySettings) -> None:
        self._runtime = runtime
        self._settings = settings

    @property
    def rpc(self) -> RpcClient:
        if self._runtime.rpc is None:
            raise ApiError(503, "Service unavailable: the gateway is not connected to the bus yet")
        return self._runtime.rpc

    def _deadline(self, timeout_s: float | None) -> Any:
        return utcnow() + timedelta(seconds=timeout_s or self._settings.rpc_timeout_s)

    async def command(
        self,
        name: str,
        caller: Caller,
        instance_id: str,
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send a session command to the shard of ``instance_id``."""
        request = Command(
            name=name,
            caller=caller,
            instance_id=instance_id,
            payload=payload or {},
            deadline=self._deadline(timeout_s),
            idempotency_key=idempotency_key,
        )
        key = shard_queue(shard_for(instance_id, self._settings.shard_count))
        return await self.rpc.call(EXCHANGE_COMMANDS, key, request)

    async def query(
        self,
        name: str,
        caller: Caller | None,
        instance_id: str | None = None,
        payload: dict[str, Any] | None = None,
        *,
        target: str = QUERY_ROUTING_KEY,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send a query to ``target`` (session workers by default, or a stats/webhooks queue)."""
        request = Query(
            name=name,
            caller=caller,
            instance_id=instance_id,
            payload=payload or {},
            deadline=self._deadline(timeout_s),
        )
        return await self.rpc.call(EXCHANGE_COMMANDS, target, request)

    async def stats(
        self,
        name: str,
        caller: Caller | None,
        payload: dict[str, Any] | None = None,
        *,
        instance_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """A query to the stats service (``wa.queries.stats``; names in ``wa_common.schemas.stats``).
        ``caller=None`` is an internal call (the gateway itself)."""
        return await self.query(
            name, caller, instance_id, payload, target=STATS_QUERY_QUEUE, timeout_s=timeout_s
        )

    async def webhooks(
        self, name: str, caller: Caller, instance_id: str, payload: dict[str, Any] | None = None
    ) -> Reply:
        """A request to the webhook dispatcher (``wa.queries.webhooks``; names in
        ``wa_common.schemas.webhooks``)."""
        return await self.query(name, caller, instance_id, payload, target=WEBHOOKS_QUERY_QUEUE)


def ensure_ok(reply: Reply) -> Reply:
    """``reply`` if it succeeded, else raise the :class:`ApiError` it describes."""
    if reply.ok and reply.status < 400:
        return reply
    status = reply.status if 400 <= reply.status <= 599 else 500
    if status >= 500 and status not in (503, 504):
        # The callee's internals are not ours to expose; 503/504 texts are written for clients
        # (504: a send the worker did not start, too close to its deadline).
        raise ApiError(500, "Internal server error in a backend service")
    raise ApiError(status, reply.error or "Request failed", reply.details)


def answer(reply: Reply, response: Response) -> Any:
    """A route's answer for ``reply``: its data, with its status set on ``response``, for FastAPI
    to validate against the route's response model (a reply that does not fit is a 500, see
    ``errors.py``); the JSON error for a failure."""
    ensure_ok(reply)
    response.status_code = reply.status
    return reply.data if reply.data is not None else {}


def reply_as(model: type[M], reply: Reply) -> M:
    """The data of a successful ``reply`` as ``model``, for a route that reads it. Data that does
    not fit is the backend's fault, not the caller's: it fails as a response that does not fit
    its model does (500, logged), never as the caller's 400."""
    ensure_ok(reply)
    try:
        return model.model_validate(reply.data)
    except ValidationError as exc:
        raise ResponseValidationError(exc.errors(include_input=False, include_url=False)) from None
