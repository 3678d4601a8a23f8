"""Operations the gateway calls over the bus (``wa_common.schemas.webhooks``), as replies.

Thin: authorisation against the settings replica (owner = ``InstanceSnapshot.userId``, admins
see all; anything else is 404), then the repository and the dispatcher do the work.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from wa_common.db import store_status
from wa_common.ids import is_id, new_id
from wa_common.schemas import Reply, Request
from wa_common.schemas.session import SessionQuery
from wa_common.schemas.webhooks import (
    TEST_EVENT,
    Attempt,
    Delivery,
    DeliveryAccepted,
    DeliveryPage,
    ListDeliveries,
    Pagination,
    Redeliver,
    WebhooksOperation,
)
from wa_webhooks import models
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.repository import NewDelivery, Repository, now_ms
from wa_webhooks.service import canonical_json, iso_millis

NOT_FOUND = "Instance not found"


def _iso(ms: int | None) -> str | None:
    return iso_millis(datetime.fromtimestamp(ms / 1000, UTC)) if ms is not None else None


def delivery_view(d: models.Delivery, attempts: list[models.Attempt]) -> Delivery:
    """The API shape of a delivery (``wa_common.schemas.webhooks.Delivery``)."""
    return Delivery(
        id=d.id,
        instance_id=d.instance_id,
        event_id=d.event_id,
        event=d.event,
        url=d.url,
        status=d.status,
        attempt_count=d.attempt_count,
        max_retries=d.max_retries,
        created_at=_iso(d.created_at) or "",
        next_attempt_at=_iso(d.next_attempt_at) if d.status == "pending" else None,
        finished_at=_iso(d.finished_at),
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        redelivery_of=d.redelivery_of,
        attempts=[
            Attempt(
                number=a.number,
                at=_iso(a.started_at) or "",
                duration_ms=a.duration_ms,
                status_code=a.status_code,
                outcome=a.outcome,
                error=a.error,
            )
            for a in attempts
        ],
    )


class WebhooksApi:
    def __init__(self, repo: Repository, dispatcher: Dispatcher, *, database_url: str | None = None) -> None:
        self.repo = repo
        self.dispatcher = dispatcher
        self.database_url = database_url

    async def handle(self, request: Request) -> Reply:
        """Answer one request; unknown names are 400, invalid payloads 400 with field details."""
        try:
            if request.name == WebhooksOperation.LIST_DELIVERIES:
                return await self.list_deliveries(request)
            if request.name == WebhooksOperation.REDELIVER:
                return await self.redeliver(request)
            if request.name == WebhooksOperation.SEND_TEST:
                return await self.send_test(request)
            if request.name == SessionQuery.STORE_STATUS and self.database_url is not None:
                if request.caller is not None and not request.caller.is_admin:
                    return Reply.failure(403, "administrator rights required")
                return Reply.success(store_status(self.database_url))
        except ValidationError as exc:
            details = [
                {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
            ]
            return Reply.failure(400, "Invalid request", details)
        return Reply.failure(400, f"Unknown webhooks operation {request.name!r}")

    async def _endpoint(self, request: Request) -> models.Endpoint | None:
        # An id that cannot exist is not looked up (a NUL byte would make the store fail): 404.
        if not is_id(request.instance_id) or request.caller is None:
            return None
        ep = await self.repo.endpoint(request.instance_id)
        if ep is None or ep.deleted:
            return None
        if not request.caller.is_admin and ep.user_id != request.caller.user_id:
            return None
        return ep

    async def list_deliveries(self, request: Request) -> Reply:
        query = ListDeliveries.model_validate(request.payload)
        ep = await self._endpoint(request)
        if ep is None:
            return Reply.failure(404, NOT_FOUND)
        rows, attempts, total = await self.repo.list_deliveries(
            ep.instance_id, status=query.status, limit=query.limit, skip=query.skip
        )
        page = DeliveryPage(
            deliveries=[delivery_view(d, attempts[d.id]) for d in rows],
            pagination=Pagination(
                total=total, limit=query.limit, skip=query.skip, has_more=query.skip + len(rows) < total
            ),
        )
        return Reply.success(page.dump())

    @staticmethod
    def _not_sendable(ep: models.Endpoint) -> Reply | None:
        if not ep.url:
            return Reply.failure(400, "The instance has no webhookUrl")
        if not ep.enabled:
            return Reply.failure(400, "Webhooks are disabled for this instance (webhookEnabled is false)")
        return None

    async def _accepted(self, delivery_id: str, message: str) -> Reply:
        d = await self.repo.get_delivery(delivery_id)
        assert d is not None
        body = DeliveryAccepted(message=message, delivery=delivery_view(d, []))
        return Reply.success(body.dump(), status=202)

    async def redeliver(self, request: Request) -> Reply:
        cmd = Redeliver.model_validate(request.payload)
        ep = await self._endpoint(request)
        if ep is None:
            return Reply.failure(404, NOT_FOUND)
        original = await self.repo.get_delivery(cmd.delivery_id) if is_id(cmd.delivery_id) else None
        if original is None or original.instance_id != ep.instance_id:
            return Reply.failure(404, "Delivery not found")
        if original.status == "pending":
            return Reply.failure(409, "The delivery is still pending; it will be attempted again")
        refused = self._not_sendable(ep)
        if refused is not None:
            return refused
        ids = await self.repo.enqueue(
            [
                NewDelivery(
                    event_id=original.event_id,
                    instance_id=ep.instance_id,
                    user_id=ep.user_id,
                    event=original.event,
                    url=ep.url,
                    body=original.body,
                    max_retries=ep.max_retries,
                    occurred_at=original.occurred_at,
                )
            ],
            redelivery_of=original.id,
        )
        self.dispatcher.wake()
        return await self._accepted(ids[0], "Redelivery scheduled")

    async def send_test(self, request: Request) -> Reply:
        ep = await self._endpoint(request)
        if ep is None:
            return Reply.failure(404, NOT_FOUND)
        refused = self._not_sendable(ep)
        if refused is not None:
            return refused
        now = now_ms()
        stamp = _iso(now) or ""
        body: dict[str, Any] = {
            "event": TEST_EVENT,
            "data": {
                "instanceId": ep.instance_id,
                "message": "This is a test webhook",
                "timestamp": stamp,
            },
            "timestamp": stamp,
        }
        ids = await self.repo.enqueue(
            [
                NewDelivery(
                    event_id=new_id(),
                    instance_id=ep.instance_id,
                    user_id=ep.user_id,
                    event=TEST_EVENT,
                    url=ep.url,
                    body=canonical_json(body).decode("utf-8"),
                    max_retries=ep.max_retries,
                    occurred_at=now,
                )
            ]
        )
        self.dispatcher.wake()
        return await self._accepted(ids[0], "Test webhook scheduled")
