"""The contract between the gateway and the webhook dispatcher: operation names and payloads.

The gateway sends these as :class:`~wa_common.schemas.Query`/``Command`` on ``wa.commands``
with routing key ``WEBHOOKS_QUERY_QUEUE`` (``wa.queries.webhooks``; any dispatcher replica
answers): ``RpcClient.call(EXCHANGE_COMMANDS, WEBHOOKS_QUERY_QUEUE, request)``. Every
request carries ``caller`` (:class:`~wa_common.schemas.Caller`) and ``instance_id``. The
dispatcher answers 404 ``{"error": "Instance not found"}`` for an instance it does not know,
that was deleted, or that is not the caller's (admins see every instance; ownership comes from
``InstanceSnapshot.userId``). A reply's ``data`` is the HTTP response body and ``status``
the HTTP status to relay; a malformed request or an invalid payload is answered 400 (with
``details`` naming each field), never dead-lettered (``wa_common.bus.router``).

Operations (``name`` → request payload → reply):

- ``webhooks.deliveries.list`` (Query), ``GET /api/instances/{id}/webhooks/deliveries``:
  payload :class:`ListDeliveries` ``{limit, skip, status?}`` → 200 :class:`DeliveryPage`
  ``{deliveries: [Delivery...], pagination: {total, limit, skip, hasMore}}``, newest first.
  400 for an unknown ``status``.
- ``webhooks.deliveries.redeliver`` (Command), ``POST .../webhooks/deliveries/{deliveryId}/redeliver``:
  payload :class:`Redeliver` ``{deliveryId}`` → 202 :class:`DeliveryAccepted` with a *new*
  delivery (``redeliveryOf`` = the original id) carrying the same body and the same
  ``X-Webhook-Id`` (the event id). 404 for an unknown delivery, 409 while the original is still
  pending, 400 when webhooks are disabled or no URL is set.
- ``webhooks.test`` (Command), ``POST /api/instances/{id}/webhooks/test``: payload
  :class:`SendTest` (empty) → 202 :class:`DeliveryAccepted`; enqueues a ``webhook_test`` event
  ``{"event": "webhook_test", "data": {"instanceId", "message", "timestamp"}, "timestamp"}``,
  delivered and retried like any other. 400 when webhooks are disabled or no URL is set.

Webhook HTTP request (what receivers get): ``POST`` with the body ``{event, data, timestamp}``
(canonical JSON, see ``wa_webhooks.service``) and the headers ``Content-Type: application/json``,
``User-Agent: wa-webhooks/<version>``, ``X-Webhook-Id`` (the event id, a ULID; the same on
every retry and redelivery — receivers deduplicate on it), ``X-Webhook-Event`` (the event name),
``X-Webhook-Timestamp`` (the body's ``timestamp``, ISO 8601 UTC with milliseconds), and, when the
instance has a secret, ``X-Webhook-Signature`` (lowercase hex HMAC-SHA256 of the body bytes).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from wa_common.schemas.status import DeliveryStatus
from wa_common.schemas.wire import ApiModel, Pagination, UtcDateTime

__all__ = [
    "TEST_EVENT",
    "Attempt",
    "AttemptOutcome",
    "Delivery",
    "DeliveryAccepted",
    "DeliveryPage",
    "DeliveryStatus",
    "ListDeliveries",
    "Pagination",
    "Redeliver",
    "SendTest",
    "WebhooksOperation",
]


class WebhooksOperation(StrEnum):
    LIST_DELIVERIES = "webhooks.deliveries.list"  # Query: ListDeliveries → DeliveryPage
    REDELIVER = "webhooks.deliveries.redeliver"  # Command: Redeliver → 202 DeliveryAccepted
    SEND_TEST = "webhooks.test"  # Command: SendTest → 202 DeliveryAccepted


TEST_EVENT = "webhook_test"
"""Event name of the body sent by ``webhooks.test``."""

AttemptOutcome = Literal["2xx", "3xx", "4xx", "5xx", "timeout", "error"]
"""An attempt's outcome: the class of the HTTP status, or ``timeout``/``error`` (no answer)."""


class ListDeliveries(ApiModel):
    limit: int = Field(50, ge=1, le=500)
    skip: int = Field(0, ge=0)
    status: DeliveryStatus | None = None


class Redeliver(ApiModel):
    delivery_id: str


class SendTest(ApiModel):
    pass


class Attempt(ApiModel):
    """One HTTP attempt. ``at``: its start; ``durationMs`` milliseconds; ``statusCode`` is
    ``None`` for timeouts and connection/refusal errors."""

    number: int
    at: UtcDateTime
    duration_ms: int
    status_code: int | None
    outcome: AttemptOutcome = Field(examples=["2xx"])
    error: str | None = None


class Delivery(ApiModel):
    """A webhook delivery (one event to one instance's URL) and its attempts, oldest first.

    ``status``: ``pending`` (waiting for its next attempt), ``delivered`` (a 2xx answer),
    ``failed`` (1 + maxRetries attempts failed), ``cancelled`` (instance deleted or webhooks
    disabled/unset). ``nextAttemptAt`` is ``None`` unless ``status`` is ``pending``.
    ``maxRetries`` is the instance's setting when the delivery was created.
    """

    id: str
    instance_id: str
    event_id: str
    event: str = Field(examples=["message_received"])
    url: str | None
    status: DeliveryStatus
    attempt_count: int
    max_retries: int
    created_at: UtcDateTime
    next_attempt_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    attempts: list[Attempt]


class DeliveryPage(ApiModel):
    deliveries: list[Delivery]
    pagination: Pagination


class DeliveryAccepted(ApiModel):
    success: bool = True
    message: str
    delivery: Delivery
