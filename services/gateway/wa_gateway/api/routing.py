"""What the API routes share: the caller dependencies, the ``Idempotency-Key`` header, requests
about the path's instance (and questions to stats or the webhook dispatcher), and handlers that
only forward such a request and answer its reply.

Routes answer the reply's data (:func:`~wa_gateway.backend.answer`) and declare its
``wa_common.schemas`` model as their ``response_model``: FastAPI validates every body on the way
out and documents it in ``/openapi.json`` from the model the service built it with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Response
from pydantic import BaseModel

from wa_common.schemas import Caller, Reply
from wa_common.schemas.session import MAX_SKIP, SessionCommand, SessionQuery
from wa_gateway.backend import answer
from wa_gateway.state import admin_caller, api_caller, check_instance_id, gateway

CallerDep = Annotated[Caller, Depends(api_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="a retried send with the same key returns the first result instead of sending again",
    ),
]
Skip = Annotated[int, Query(ge=0, le=MAX_SKIP)]
IsoDate = Annotated[str | None, Query(max_length=64, description="ISO 8601")]

Endpoint = Callable[..., Awaitable[Any]]


async def ask(
    request: Request,
    name: SessionCommand | SessionQuery,
    caller: Caller,
    instance_id: str,
    body: BaseModel | dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> Reply:
    """Send the session command or query ``name`` about the path's instance ``instance_id``
    (404 for an id that cannot be an instance's) with ``body`` as the payload (a model: its
    JSON) and the idempotency ``key``; return the reply."""
    backend = gateway(request).backend
    checked = check_instance_id(instance_id)
    payload = body.model_dump(by_alias=True, mode="json") if isinstance(body, BaseModel) else body
    if isinstance(name, SessionCommand):
        return await backend.command(name, caller, checked, payload, idempotency_key=key)
    return await backend.query(name, caller, checked, payload)


async def relay(
    request: Request,
    response: Response,
    name: SessionCommand | SessionQuery,
    caller: Caller,
    instance_id: str,
    body: BaseModel | dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> Any:
    """:func:`ask`, and answer the reply (:func:`~wa_gateway.backend.answer`)."""
    return answer(await ask(request, name, caller, instance_id, body, key=key), response)


async def ask_service(
    target: str,
    name: str,
    request: Request,
    response: Response,
    caller: Caller,
    body: BaseModel,
    *,
    instance_id: str | None = None,
) -> Any:
    """Ask the service consuming ``target`` (``STATS_QUERY_QUEUE``, ``WEBHOOKS_QUERY_QUEUE``)
    ``name`` with ``body`` as the payload, and answer its reply (a module binds its ``target``
    with ``functools.partial``)."""
    payload = body.model_dump(by_alias=True, mode="json")
    reply = await gateway(request).backend.query(name, caller, instance_id, payload, target=target)
    return answer(reply, response)


def forwards(name: SessionCommand | SessionQuery) -> Callable[[Callable[[], object]], Endpoint]:
    """Turn the decorated stub (its name and docstring only) into a route handler that sends
    ``name`` about the path's instance, without a payload, and answers the reply::

        @router.get("/{instanceId}", response_model=InstanceDetail, summary="Get instance")
        @forwards(SessionQuery.GET_INSTANCE)
        def get_instance() -> None:
            "One instance (the stub's docstring is the route's description)."
    """

    def handler(stub: Callable[[], object]) -> Endpoint:
        async def endpoint(request: Request, response: Response, instanceId: str, caller: CallerDep) -> Any:
            return await relay(request, response, name, caller, instanceId)

        endpoint.__name__ = endpoint.__qualname__ = stub.__name__
        endpoint.__doc__ = stub.__doc__
        return endpoint

    return handler
