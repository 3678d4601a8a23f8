"""One attempt of a claimed delivery: the HTTP ``POST``, its record, and what comes next.

- one attempt = one ``POST`` through the SSRF-guarded client (:mod:`~wa_webhooks.poster`, no
  redirects), bounded by ``attempt_timeout_s`` overall; 2xx = delivered, anything else (3xx/4xx/5xx, timeout,
  connection error, refused address, and any exception while building, signing, sending or
  reading — a custom header HTTP cannot carry, for one) = failed attempt, logged in the attempt
  log with an error text that never contains the secret, a custom header value or the URL;
- after 1 + ``maxRetries`` failed attempts the delivery is ``failed``; otherwise it is due again
  after ``retryInterval`` ms ± ``retry_jitter``;
- a delivery that ends (delivered or failed) is announced as ``webhook.delivered`` /
  ``webhook.failed``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from wa_common.clock import Clock
from wa_common.logs import get_logger
from wa_common.netguard import Resolver, UnsafeURLError
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import WebhookDeliveredData
from wa_common.schemas.status import DeliveryStatus
from wa_common.schemas.wire import iso_ms
from wa_webhooks import metrics
from wa_webhooks.batch_writes import AttemptRecord
from wa_webhooks.deliveries import AttemptResult, Claimed
from wa_webhooks.poster import GuardedPoster, HttpError
from wa_webhooks.replica import EndpointView
from wa_webhooks.service import InvalidHeader, outcome_of, request_headers, safe_error
from wa_webhooks.settings import WebhooksSettings

log = get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]
Record = Callable[[AttemptRecord], Awaitable[bool]]


def _secrets(ep: EndpointView) -> list[str | None]:
    """What an attempt's error text must never contain: the secret, custom header values, the URL."""
    return [ep.secret, ep.url, *(str(v) for v in (ep.headers or {}).values())]


def webhook_client(settings: WebhooksSettings, resolver: Resolver | None = None) -> GuardedPoster:
    """The SSRF-guarded HTTP client of the attempts (``resolver`` replaces DNS: tests)."""
    return GuardedPoster(
        allow_private=settings.private_targets_allowed,
        timeout_s=settings.attempt_timeout_s,
        max_connections=settings.max_in_flight,
        resolver=resolver,
    )


@dataclass
class AttemptRunner:
    """Makes attempts through ``client`` (:func:`webhook_client`) and has them recorded by
    ``record`` (``recorder.AttemptRecorder.record``: True if the delivery was moved on);
    ``publish`` sends ``webhook.delivered``/``webhook.failed`` (``None``: not published)."""

    settings: WebhooksSettings
    client: GuardedPoster
    record: Record
    clock: Clock
    publish: Publish | None = None

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self, c: Claimed, ep: EndpointView) -> None:
        """Attempt ``c`` at ``ep``'s URL and record the outcome."""
        await self.finish(c, ep, await self.attempt(c, ep))

    async def fail(self, c: Claimed, ep: EndpointView, error: str) -> None:
        """Record a failed attempt that could not be made (``error``: safe to show)."""
        metrics.ATTEMPTS.labels("error").inc()
        await self.finish(c, ep, AttemptResult(None, "error", error, self.clock(), 0.0))

    async def attempt(self, c: Claimed, ep: EndpointView) -> AttemptResult:
        """One HTTP attempt. Never raises (but for cancellation): whatever goes wrong while
        building the request (headers, signature), sending it or reading the answer is a failed
        attempt with an error text safe to store, log and show (:func:`safe_error`)."""
        started = self.clock()
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            if not ep.url:
                raise ValueError("no webhook URL")
            body = c.body.encode("utf-8")
            headers = request_headers(
                event_id=c.event_id,
                event=c.event,
                timestamp=iso_ms(c.occurred_at),
                body=body,
                secret=ep.secret,
                custom=ep.headers,
            )
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                status = await self.client.post(ep.url, body, headers)
            outcome = outcome_of(status)
            if outcome != "2xx":
                error = f"HTTP {status}"
        except TimeoutError:
            outcome, error = "timeout", f"no answer within {self.settings.attempt_timeout_s:g}s"
        except (InvalidHeader, HttpError) as exc:
            outcome, error = "error", str(exc)
        except UnsafeURLError as exc:
            outcome, error = "error", exc.reason
        except Exception as exc:
            outcome, error = "error", f"the request could not be made ({type(exc).__name__})"
            log.warning(
                "webhook attempt failed unexpectedly",
                delivery_id=c.id,
                error_type=type(exc).__name__,
                detail=safe_error(str(exc), _secrets(ep)),
            )
        if error is not None:
            error = safe_error(error, _secrets(ep))
        duration = time.perf_counter() - t0
        metrics.ATTEMPTS.labels(outcome).inc()
        metrics.ATTEMPT_SECONDS.observe(duration)
        return AttemptResult(status if outcome != "timeout" else None, outcome, error, started, duration)

    def _next(self, c: Claimed, ep: EndpointView, r: AttemptResult) -> tuple[DeliveryStatus, datetime | None]:
        """What the delivery becomes after attempt ``r``, and when it is due again (pending)."""
        if r.outcome == "2xx":
            return DeliveryStatus.DELIVERED, None
        if c.attempt_count + 1 >= 1 + ep.max_retries:
            return DeliveryStatus.FAILED, None
        j = self.settings.retry_jitter
        retry_in = timedelta(milliseconds=ep.retry_interval_ms * (1 + random.uniform(-j, j)))
        return DeliveryStatus.PENDING, self.clock() + retry_in

    async def finish(self, c: Claimed, ep: EndpointView, r: AttemptResult) -> None:
        """Record attempt ``r`` of ``c`` and what the delivery becomes (retry, delivered,
        failed); announce a delivery that ended. Raises the store's errors (nothing recorded:
        the delivery is attempted again after its lease)."""
        number = c.attempt_count + 1
        status, next_at = self._next(c, ep, r)
        updated = await self.record(AttemptRecord(c, r, ep.url or "", status, next_at))
        if not updated:
            return
        log.info(
            "webhook attempt",
            delivery_id=c.id,
            event_id=c.event_id,
            instance_id=c.instance_id,
            attempt=number,
            outcome=r.outcome,
            status_code=r.status_code,
            duration_ms=int(r.duration_s * 1000),
            error=r.error,
            status=status.value,
        )
        if status == DeliveryStatus.PENDING:
            return
        metrics.DELIVERIES_FINISHED.labels(status.value).inc()
        if status == DeliveryStatus.DELIVERED:
            metrics.DELIVERY_LATENCY.observe(max(0.0, (self.clock() - c.occurred_at).total_seconds()))
        await self._announce(c, number, delivered=status == DeliveryStatus.DELIVERED)

    async def _announce(self, c: Claimed, attempts: int, *, delivered: bool) -> None:
        if self.publish is None:
            return
        kind = EventType.WEBHOOK_DELIVERED if delivered else EventType.WEBHOOK_FAILED
        data = WebhookDeliveredData(
            instance_id=c.instance_id, delivery_id=c.id, event_id=c.event_id, event=c.event, attempts=attempts
        )
        event = Event(type=kind, instance_id=c.instance_id, user_id=c.user_id, data=data.dump())
        try:
            await self.publish(event)
        except Exception as exc:
            log.warning("could not publish webhook outcome event", delivery_id=c.id, error=str(exc))
