"""The outbox: turning events into deliveries, and delivering them with retries.

Flow: :meth:`Dispatcher.ingest` writes one delivery row per interested instance (before the bus
message is acked; idempotent on the event id). The scheduler loop (:meth:`Dispatcher.run`)
claims due rows with a lease (see ``repository``), and runs each as its own task:

- per endpoint (``scheme://host:port``) at most ``per_host_concurrency`` attempts run at once and
  7 times as many queue behind them; while an endpoint is that full, its instances are left out
  of claims (other replicas may take them) and any excess of a batch is handed back at once, so a
  slow or dead endpoint holds at most ``8 * per_host_concurrency`` of the ``max_in_flight`` slots
  and never holds up others;
- the lease is renewed just before the attempt when what is left of it would not cover the
  attempt, so a delivery another replica took over after a long queueing is not sent twice;
- one attempt = one ``POST`` through the SSRF-guarded client (no redirects), bounded by
  ``attempt_timeout_s`` overall; 2xx = delivered, anything else (3xx/4xx/5xx, timeout, connection
  error, refused address, and any exception while building, signing, sending or reading — a
  custom header HTTP cannot carry, for one) = failed attempt, logged in the attempt log with an
  error text that never contains the secret, a custom header value or the URL; after
  1 + ``maxRetries`` failed attempts the delivery is ``failed``; otherwise it is due again after
  ``retryInterval`` ms ± ``retry_jitter``.

Settings are read from the replica at each attempt: a changed URL, secret or headers apply to
retries, and a deleted instance or disabled webhooks cancel the pending delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from wa_common.logs import get_logger
from wa_common.netguard import Resolver, UnsafeURLError, guarded_client
from wa_common.schemas import Event, EventType
from wa_common.schemas.events import WEBHOOK_EVENT_TYPES, WebhookDeliveredData
from wa_webhooks import metrics
from wa_webhooks.models import Endpoint
from wa_webhooks.repository import Claimed, NewDelivery, Repository, now_ms
from wa_webhooks.service import (
    InvalidHeader,
    iso_millis,
    outcome_of,
    request_headers,
    safe_error,
    wants,
    webhook_body,
    webhook_data,
)
from wa_webhooks.settings import WebhooksSettings

log = get_logger(__name__)

Spawn = Callable[..., "asyncio.Task[Any]"]
Publish = Callable[[Event], Awaitable[None]]

HOST_QUEUE_FACTOR = 8  # per endpoint: per_host_concurrency running + 7x that queued
_MAX_RESPONSE_READ = 64 * 1024


@dataclass
class _HostSlot:
    sem: asyncio.Semaphore
    users: int = 0  # deliveries of this endpoint running or queued in this process


@dataclass
class AttemptResult:
    status_code: int | None
    outcome: str
    error: str | None
    started_at: int
    duration_s: float


def _default_spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    return asyncio.create_task(coro, name=name)


class Dispatcher:
    """Ingests events into the outbox and delivers it. Start :meth:`run` as a background task.

    ``publish`` sends ``webhook.delivered``/``webhook.failed`` events (``None``: not published).
    ``spawn`` runs one delivery task (``runtime.tasks.spawn``). ``resolver`` replaces DNS for the
    SSRF guard (tests).
    """

    def __init__(
        self,
        repo: Repository,
        settings: WebhooksSettings,
        *,
        publish: Publish | None = None,
        spawn: Spawn | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self._publish = publish
        self._spawn = spawn or _default_spawn
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._hosts: dict[str, _HostSlot] = {}
        self._instance_host: dict[str, str] = {}  # instance id → endpoint key, while in flight
        self._closing = False
        self._attempting = 0
        self._no_attempts = asyncio.Event()
        self._no_attempts.set()
        self._client = guarded_client(
            allow_private=settings.private_targets_allowed,
            timeout=settings.attempt_timeout_s,
            resolver=resolver,
            limits=httpx.Limits(
                max_connections=settings.max_in_flight,
                max_keepalive_connections=min(settings.max_in_flight, 200),
            ),
        )
        self._lease_ms = int(max(settings.lease_s, 2 * (settings.attempt_timeout_s + 5)) * 1000)

    async def close(self) -> None:
        """Stop starting attempts, let running ones finish and be recorded (up to the attempt
        timeout), then close the HTTP client. Deliveries not attempted keep their lease and are
        taken again when it runs out (by this replica's successor or another one)."""
        self._closing = True
        self.wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_attempts.wait(), self.settings.attempt_timeout_s + 1)
        await self._client.aclose()

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- ingest ---------------------------------------------------------------------------------

    async def ingest(self, event: Event) -> int:
        """Write the deliveries ``event`` causes to the outbox; returns how many were new.

        Webhook-visible events only. ``limit_exceeded`` without an instance goes to every
        webhook-enabled instance of ``event.user_id`` (with that instance's id as
        ``data.instanceId``). Idempotent: a redelivered event adds nothing.
        """
        if event.type not in WEBHOOK_EVENT_TYPES:
            return 0
        endpoints: list[Endpoint]
        if event.instance_id:
            ep = await self.repo.endpoint(event.instance_id)
            endpoints = [ep] if ep is not None and not ep.deleted else []
        elif event.type == EventType.LIMIT_EXCEEDED and event.user_id:
            endpoints = await self.repo.user_endpoints(event.user_id)
        else:
            return 0
        occurred = int(event.occurred_at.timestamp() * 1000)
        items = []
        for ep in endpoints:
            if not wants(
                enabled=ep.enabled,
                url=ep.url,
                notify_received=ep.notify_received,
                notify_sent=ep.notify_sent,
                notify_delivery=ep.notify_delivery,
                notify_read=ep.notify_read,
                event=event.type,
                data=event.data,
            ):
                continue
            data = webhook_data(event.type, event.data, ep.instance_id)
            items.append(
                NewDelivery(
                    event_id=event.id,
                    instance_id=ep.instance_id,
                    user_id=ep.user_id,
                    event=event.type,
                    url=ep.url,
                    body=webhook_body(event.type, data, event.occurred_at).decode("utf-8"),
                    max_retries=ep.max_retries,
                    occurred_at=occurred,
                )
            )
        inserted = await self.repo.enqueue(items)
        if inserted:
            self.wake()
        return len(inserted)

    # --- scheduler ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and start due deliveries until cancelled."""
        s = self.settings
        while not self._closing:
            claimed: list[Claimed] = []
            try:
                capacity = s.max_in_flight - len(self._in_flight)
                if capacity > 0:
                    claimed = await self.repo.claim(
                        min(capacity, s.claim_batch), self._lease_ms, exclude_instances=self._saturated()
                    )
                if claimed:
                    await self._start(claimed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming due deliveries failed; retrying")
            if len(claimed) >= s.claim_batch and len(self._in_flight) < s.max_in_flight:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.poll_interval_s)

    def _saturated(self) -> list[str]:
        """Instances whose endpoint is full here: not claimed until it has room again."""
        limit = self.settings.per_host_concurrency * HOST_QUEUE_FACTOR
        return [
            iid
            for iid, key in self._instance_host.items()
            if (slot := self._hosts.get(key)) is not None and slot.users >= limit
        ]

    async def _start(self, claimed: list[Claimed]) -> None:
        """Start a task per claimed delivery; hand back those whose endpoint is saturated."""
        endpoints = await self.repo.endpoints(sorted({c.instance_id for c in claimed}))
        host_limit = self.settings.per_host_concurrency * HOST_QUEUE_FACTOR
        busy: list[Claimed] = []
        for c in claimed:
            ep = endpoints.get(c.instance_id)
            slot: tuple[str, _HostSlot] | None = None
            if ep is not None and ep.url and ep.enabled and not ep.deleted:
                try:
                    slot = self._slot(ep.url)
                except Exception:  # any URL httpx cannot parse: its attempt fails and says so
                    slot = None
                if slot is not None and slot[1].users >= host_limit:
                    busy.append(c)
                    continue
                if slot is not None:
                    slot[1].users += 1  # counted now, so the rest of this batch sees it
                    self._instance_host[c.instance_id] = slot[0]
            self._in_flight.add(c.id)
            self._spawn(self._deliver(c, ep, slot), name="webhook-delivery")
        metrics.IN_FLIGHT.set(len(self._in_flight))
        if busy:
            # Due again at once: other replicas may take them; this one excludes them while full.
            await self.repo.release_many(busy, delay_ms=0)

    async def run_metrics(self, interval_s: float = 5.0) -> None:
        """Refresh the outbox gauges every ``interval_s`` seconds until cancelled."""
        while True:
            try:
                pending, oldest = await self.repo.outbox_stats()
                metrics.OUTBOX_PENDING.set(pending)
                metrics.OUTBOX_OLDEST_AGE.set(max(0.0, (now_ms() - oldest) / 1000) if oldest else 0.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox gauges not refreshed", error=str(exc))
            await asyncio.sleep(interval_s)

    async def run_retention(self, interval_s: float = 3600.0) -> None:
        """Delete finished deliveries older than ``WEBHOOKS_RETENTION_DAYS`` (with their attempts)
        every ``interval_s`` seconds, in batches, until cancelled; ``0`` days keeps everything."""
        days = self.settings.retention_days
        if days <= 0:
            return
        while True:
            try:
                before = now_ms() - int(days * 86_400_000)
                total = 0
                while (pruned := await self.repo.prune_finished(before)) > 0:
                    total += pruned
                if total:
                    metrics.DELIVERIES_PRUNED.inc(total)
                    log.info("old webhook deliveries pruned", count=total, days=days)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook delivery retention failed", error=str(exc))
            await asyncio.sleep(interval_s)

    def _slot(self, url: str) -> tuple[str, _HostSlot]:
        """The concurrency slot of the URL's endpoint (``scheme://host:port``)."""
        parsed = httpx.URL(url)
        if not parsed.host:
            raise ValueError("URL has no host")
        key = f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        slot = self._hosts.get(key)
        if slot is None:
            slot = self._hosts[key] = _HostSlot(asyncio.Semaphore(self.settings.per_host_concurrency))
        return key, slot

    async def _deliver(self, c: Claimed, ep: Endpoint | None, slot: tuple[str, _HostSlot] | None) -> None:
        try:
            if ep is None or ep.deleted:
                await self.repo.cancel(c.id, c.lock_token, "instance deleted")
                metrics.DELIVERIES_FINISHED.labels("cancelled").inc()
                return
            if not ep.enabled or not ep.url:
                await self.repo.cancel(c.id, c.lock_token, "webhooks disabled or no webhook URL")
                metrics.DELIVERIES_FINISHED.labels("cancelled").inc()
                return
            if slot is None:
                # Not the URL itself in the text: a URL may carry a token in its path or query.
                await self._finish(
                    c, ep, self._failed_result("invalid webhook URL (not parseable, or no host)")
                )
                return
            async with slot[1].sem:
                # Renew the lease unless the claim's lease still covers this attempt with margin.
                margin_ms = int((self.settings.attempt_timeout_s + 5) * 1000)
                if now_ms() + margin_ms > c.locked_until and not await self.repo.renew(
                    c.id, c.lock_token, self._lease_ms
                ):
                    return  # our lease ran out while queued; another claim owns it now
                if self._closing:
                    return  # shutting down: the lease runs out and the delivery is taken again
                self._attempting += 1
                self._no_attempts.clear()
                try:
                    result = await self._attempt(c, ep)
                    await self._finish(c, ep, result)
                finally:
                    self._attempting -= 1
                    if self._attempting == 0:
                        self._no_attempts.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery failed unexpectedly; retried after its lease", delivery_id=c.id)
        finally:
            if slot is not None:
                key, host = slot
                host.users -= 1
                limit = self.settings.per_host_concurrency * HOST_QUEUE_FACTOR
                if host.users in (limit - 1, self.settings.per_host_concurrency):
                    self.wake()  # room again (or the queue drained): claim more for this endpoint
                if host.users == 0:
                    self._hosts.pop(key, None)
                    for iid in [i for i, k in self._instance_host.items() if k == key]:
                        del self._instance_host[iid]
            self._in_flight.discard(c.id)
            metrics.IN_FLIGHT.set(len(self._in_flight))

    @staticmethod
    def _failed_result(error: str) -> AttemptResult:
        metrics.ATTEMPTS.labels("error").inc()
        return AttemptResult(None, "error", error, now_ms(), 0.0)

    async def _attempt(self, c: Claimed, ep: Endpoint) -> AttemptResult:
        """One HTTP attempt. Never raises (but for cancellation): whatever goes wrong while
        building the request (headers, signature), sending it or reading the answer is a failed
        attempt with an error text safe to store, log and show (:func:`safe_error`)."""
        started = now_ms()
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            if not ep.url:
                raise ValueError("no webhook URL")
            body = c.body.encode("utf-8")
            timestamp = iso_millis(datetime.fromtimestamp(c.occurred_at / 1000, UTC))
            headers = request_headers(
                event_id=c.event_id,
                event=c.event,
                timestamp=timestamp,
                body=body,
                secret=ep.secret,
                custom=ep.headers,
            )
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                async with self._client.stream("POST", ep.url, content=body, headers=headers) as resp:
                    status = resp.status_code
                    length = resp.headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) <= _MAX_RESPONSE_READ:
                        await resp.aread()  # lets the connection be reused
            outcome = outcome_of(status)
            if outcome != "2xx":
                error = f"HTTP {status}"
        except (TimeoutError, httpx.TimeoutException):
            outcome, error = "timeout", f"no answer within {self.settings.attempt_timeout_s:g}s"
        except InvalidHeader as exc:
            outcome, error = "error", str(exc)
        except UnsafeURLError as exc:
            outcome, error = "error", exc.reason
        except httpx.LocalProtocolError as exc:
            # Its text quotes the offending request line or header, value included.
            outcome, error = "error", f"the request could not be written ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
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

    async def _finish(self, c: Claimed, ep: Endpoint, r: AttemptResult) -> None:
        number = c.attempt_count + 1
        next_at: int | None = None
        if r.outcome == "2xx":
            new_status = "delivered"
        elif number >= 1 + ep.max_retries:
            new_status = "failed"
        else:
            new_status = "pending"
            j = self.settings.retry_jitter
            next_at = now_ms() + int(ep.retry_interval_ms * (1 + random.uniform(-j, j)))
        updated = await self.repo.record_attempt(
            c,
            url=ep.url or "",
            started_at=r.started_at,
            duration_ms=int(r.duration_s * 1000),
            status_code=r.status_code,
            outcome=r.outcome,
            error=r.error,
            new_status=new_status,
            next_attempt_at=next_at,
        )
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
            status=new_status,
        )
        if new_status == "pending":
            return
        metrics.DELIVERIES_FINISHED.labels(new_status).inc()
        if new_status == "delivered":
            metrics.DELIVERY_LATENCY.observe(max(0.0, (now_ms() - c.occurred_at) / 1000))
        await self._announce(c, number, delivered=new_status == "delivered")

    async def _announce(self, c: Claimed, attempts: int, *, delivered: bool) -> None:
        if self._publish is None:
            return
        event = Event(
            type=EventType.WEBHOOK_DELIVERED if delivered else EventType.WEBHOOK_FAILED,
            instance_id=c.instance_id,
            user_id=c.user_id,
            data=WebhookDeliveredData(
                instance_id=c.instance_id,
                delivery_id=c.id,
                event_id=c.event_id,
                event=c.event,
                attempts=attempts,
            ).dump(),
        )
        try:
            await self._publish(event)
        except Exception as exc:
            log.warning("could not publish webhook outcome event", delivery_id=c.id, error=str(exc))


def _secrets(ep: Endpoint) -> list[str | None]:
    """What an attempt's error text must never contain: the secret, custom header values, the URL."""
    return [ep.secret, ep.url, *(str(v) for v in (ep.headers or {}).values())]
