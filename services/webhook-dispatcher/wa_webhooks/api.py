"""The requests the gateway sends (``wa_common.schemas.webhooks``), as handlers on the shared
request router (``wa_common.bus.router``): it decodes and validates them (400 with field
details), drops those past their deadline, answers 500 for a handler's unexpected failure and
counts them per name; consume ``wa.queries.webhooks`` with ``WebhooksApi(...).router.consumer(bus)``.

Thin: authorisation against the settings replica (owner = ``InstanceSnapshot.userId``, admins
see all; anything else is 404), then the store and the dispatcher do the work.
"""

from __future__ import annotations

from wa_common.bus.router import RequestError, Router
from wa_common.db import store_status
from wa_common.ids import is_id, new_id
from wa_common.schemas import Reply, Request
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.status import DeliveryStatus
from wa_common.schemas.webhooks import (
    TEST_EVENT,
    Attempt,
    Delivery,
    DeliveryAccepted,
    DeliveryPage,
    ListDeliveries,
    Pagination,
    Redeliver,
    SendTest,
    WebhooksOperation,
)
from wa_common.schemas.wire import iso_ms
from wa_webhooks import models
from wa_webhooks.deliveries import NewDelivery
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import Repository
from wa_webhooks.service import webhook_body

SERVICE = "webhooks"
NOT_FOUND = "Instance not found"


# Wire fields that are columns of the same name (``Attempt.at`` is ``started_at``).
_DELIVERY_COLUMNS = [name for name in Delivery.model_fields if name not in ("next_attempt_at", "attempts")]
_ATTEMPT_COLUMNS = [name for name in Attempt.model_fields if name != "at"]


def delivery_view(d: models.Delivery, attempts: list[models.Attempt]) -> Delivery:
    """The API shape of a delivery (``wa_common.schemas.webhooks.Delivery``); ``nextAttemptAt``
    only while it is pending."""
    return Delivery(
        **{name: getattr(d, name) for name in _DELIVERY_COLUMNS},
        next_attempt_at=d.next_attempt_at if d.status == DeliveryStatus.PENDING else None,
        attempts=[Attempt(at=a.started_at, **{n: getattr(a, n) for n in _ATTEMPT_COLUMNS}) for a in attempts],
    )


def _check_sendable(ep: models.Endpoint) -> None:
    """400 when ``ep`` has webhooks off or no URL."""
    if not ep.url:
        raise RequestError(400, "The instance has no webhookUrl")
    if not ep.enabled:
        raise RequestError(400, "Webhooks are disabled for this instance (webhookEnabled is false)")


class WebhooksApi:
    """The handlers; :attr:`router` declares them (``store.status`` only with ``database_url``)."""

    def __init__(self, repo: Repository, dispatcher: Dispatcher, *, database_url: str | None = None) -> None:
        self.repo = repo
        self.dispatcher = dispatcher
        self.database_url = database_url
        self.router = Router(SERVICE)
        self.router.add(
            WebhooksOperation.LIST_DELIVERIES,
            self.list_deliveries,
            payload=ListDeliveries,
            reply=DeliveryPage,
        )
        self.router.add(
            WebhooksOperation.REDELIVER, self.redeliver, payload=Redeliver, reply=DeliveryAccepted
        )
        self.router.add(WebhooksOperation.SEND_TEST, self.send_test, payload=SendTest, reply=DeliveryAccepted)
        if database_url is not None:
            self.router.add(SessionQuery.STORE_STATUS, self.store_status)

    async def _endpoint(self, request: Request) -> models.Endpoint:
        """The request's instance, when it is the caller's (or the caller is an admin); 404."""
        # An id that cannot exist is not looked up (a NUL byte would make the store fail).
        caller = request.caller
        if caller is not None and is_id(request.instance_id):
            ep = await self.repo.endpoints.get(request.instance_id)
            if ep is not None and not ep.deleted and (caller.is_admin or ep.user_id == caller.user_id):
                return ep
        raise RequestError(404, NOT_FOUND)

    async def _schedule(self, item: NewDelivery, message: str, *, redelivery_of: str | None = None) -> Reply:
        """Enqueue ``item`` and answer 202 with the new delivery."""
        ids = await self.repo.deliveries.enqueue([item], redelivery_of=redelivery_of)
        self.dispatcher.wake()
        d = await self.repo.deliveries.get(ids[0])
        assert d is not None
        return Reply.success(DeliveryAccepted(message=message, delivery=delivery_view(d, [])), status=202)

    async def list_deliveries(self, request: Request, query: ListDeliveries) -> DeliveryPage:
        ep = await self._endpoint(request)
        rows, attempts, total = await self.repo.deliveries.page(
            ep.instance_id, status=query.status, limit=query.limit, skip=query.skip
        )
        return DeliveryPage(
            deliveries=[delivery_view(d, attempts[d.id]) for d in rows],
            pagination=Pagination.of(total, query.limit, query.skip),
        )

    async def redeliver(self, request: Request, cmd: Redeliver) -> Reply:
        ep = await self._endpoint(request)
        original = await self.repo.deliveries.get(cmd.delivery_id) if is_id(cmd.delivery_id) else None
        if original is None or original.instance_id != ep.instance_id:
            raise RequestError(404, "Delivery not found")
        if original.status == DeliveryStatus.PENDING:
            raise RequestError(409, "The delivery is still pending; it will be attempted again")
        _check_sendable(ep)
        item = NewDelivery.to(
            ep,
            event_id=original.event_id,
            event=original.event,
            body=original.body,
            occurred_at=original.occurred_at,
        )
        return await self._schedule(item, "Redelivery scheduled", redelivery_of=original.id)

    async def send_test(self, request: Request, _: SendTest) -> Reply:
        ep = await self._endpoint(request)
        _check_sendable(ep)
        now = self.repo.clock()
        data = {"instanceId": ep.instance_id, "message": "This is a test webhook", "timestamp": iso_ms(now)}
        body = webhook_body(TEST_EVENT, data, now).decode("utf-8")
        item = NewDelivery.to(ep, event_id=new_id(), event=TEST_EVENT, body=body, occurred_at=now)
        return await self._schedule(item, "Test webhook scheduled")

    async def store_status(self, request: Request) -> dict[str, str]:
        """``{provider, url}`` of this service's store (admins; internal callers have no caller)."""
        if request.caller is not None and not request.caller.is_admin:
            raise RequestError(403, "administrator rights required")
        assert self.database_url is not None
        return store_status(self.database_url)
