"""The dispatcher: ingests events into the outbox and runs each delivery as its own task.

Flow: :meth:`Dispatcher.ingest` turns an event into one delivery per interested instance
(``ingest``, settings from the in-memory replica ``replica``) and writes them by group commit
(``intake``): rows this process has room for are inserted leased to it and started at once. The
scheduler loop (:meth:`Dispatcher.run`) claims the other due rows (retries, rows whose lease ran
out, rows written by the API) with a lease (``deliveries``) and starts them the same way. A task
makes the attempt (``attempt``), gives its endpoint slot back as soon as the answer is in, and
has the attempt recorded by group commit (``recorder``):

- per endpoint (``scheme://host:port``) at most ``per_host_concurrency`` attempts run at once and
  7 times as many queue behind them; while an endpoint is that full, its instances are left out
  of claims (other replicas may take them) and any excess of a batch is handed back at once, so a
  slow or dead endpoint holds at most ``8 * per_host_concurrency`` of the ``max_in_flight`` slots
  and never holds up others;
- the lease is renewed just before the attempt when what is left of it would not cover the
  attempt, so a delivery another replica took over after a long queueing is not sent twice.

Settings are read from the replica when a delivery is started: a changed URL, secret or headers
apply to retries, and a deleted instance or disabled webhooks cancel the pending delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from wa_common.logs import get_logger
from wa_common.netguard import Resolver
from wa_common.schemas import Event
from wa_common.schemas.status import DeliveryStatus
from wa_webhooks import metrics
from wa_webhooks.attempt import AttemptRunner, Publish, webhook_client
from wa_webhooks.batch_writes import BatchWrites
from wa_webhooks.deliveries import Claimed
from wa_webhooks.ingest import deliveries_for
from wa_webhooks.intake import Intake
from wa_webhooks.recorder import AttemptRecorder
from wa_webhooks.replica import EndpointReplica, EndpointView
from wa_webhooks.repository import Repository
from wa_webhooks.settings import WebhooksSettings

log = get_logger(__name__)

Spawn = Callable[..., "asyncio.Task[Any]"]

HOST_QUEUE_FACTOR = 8  # per endpoint: per_host_concurrency running + 7x that queued


@dataclass
class _HostSlot:
    key: str  # scheme://host:port
    sem: asyncio.Semaphore
    users: int = 0  # deliveries of this endpoint running or queued in this process


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
        self.clock = repo.clock
        self.replica = EndpointReplica(repo.endpoints)
        writes = BatchWrites(repo.engine, sessions=repo.sessions, clock=repo.clock)
        self.recorder = AttemptRecorder(writes)
        self.attempts = AttemptRunner(
            settings, webhook_client(settings, resolver), self.recorder.record, repo.clock, publish
        )
        self._spawn = spawn or _default_spawn
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._hosts: dict[str, _HostSlot] = {}
        self._instance_host: dict[str, str] = {}  # instance id → endpoint key, while in flight
        self._host_limit = settings.per_host_concurrency * HOST_QUEUE_FACTOR
        self._closing = False
        self._attempting = 0
        self._no_attempts = asyncio.Event()
        self._no_attempts.set()
        self._lease = timedelta(seconds=max(settings.lease_s, 2 * (settings.attempt_timeout_s + 5)))
        self._margin = timedelta(seconds=settings.attempt_timeout_s + 5)
        self.intake = Intake(
            writes,
            lease=self._lease,
            room=self._room,
            hand_over=self._hand_over,
            wake=self.wake,
            clock=repo.clock,
        )

    async def close(self) -> None:
        """Stop starting attempts, let running ones finish and be recorded (up to the attempt
        timeout), then close the HTTP client. Deliveries not attempted keep their lease and are
        taken again when it runs out (by this replica's successor or another one)."""
        self._closing = True
        self.wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_attempts.wait(), self.settings.attempt_timeout_s + 1)
        await self.attempts.close()

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def ingest(self, event: Event) -> int:
        """Write the deliveries ``event`` causes to the outbox (webhook-visible events only;
        ``ingest.deliveries_for``) and start them; returns how many were new (a redelivered event
        adds nothing). Returns once they are committed; raises the store's errors."""
        items = await deliveries_for(self.replica, event)
        return await self.intake.submit(items) if items else 0

    def _room(self) -> int:
        """How many more deliveries this process takes on now (none while closing)."""
        return 0 if self._closing else self.settings.max_in_flight - len(self._in_flight)

    async def _hand_over(self, started: list[tuple[Claimed, EndpointView]]) -> None:
        """Start new rows leased to us at insert (``intake``); never raises: a row not started
        keeps its lease and is claimed again when it runs out."""
        try:
            await self._launch(started)
        except Exception:
            log.exception("new deliveries not started; claimed again after their lease")

    # --- scheduler ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Load the settings replica, then claim and start due deliveries until cancelled."""
        s = self.settings
        try:
            count = await self.replica.load()
            log.info("webhook settings replica loaded", instances=count)
        except Exception as exc:  # instances are then looked up in the store on first use
            log.warning("webhook settings replica not loaded", error=str(exc))
        while not self._closing:
            claimed: list[Claimed] = []
            try:
                capacity = s.max_in_flight - len(self._in_flight)
                if capacity > 0:
                    claimed = await self.repo.deliveries.claim(
                        min(capacity, s.claim_batch), self._lease, exclude_instances=self._saturated()
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
        return [
            iid
            for iid, key in self._instance_host.items()
            if (slot := self._hosts.get(key)) is not None and slot.users >= self._host_limit
        ]

    async def _start(self, claimed: list[Claimed]) -> None:
        """Start claimed deliveries with their endpoints' settings (:meth:`_launch`)."""
        endpoints = await self.replica.lookup_many(sorted({c.instance_id for c in claimed}))
        await self._launch([(c, endpoints.get(c.instance_id)) for c in claimed])

    async def _launch(self, started: Sequence[tuple[Claimed, EndpointView | None]]) -> None:
        """Start a task per leased delivery; hand back those whose endpoint is saturated."""
        busy: list[Claimed] = []
        for c, ep in started:
            slot: _HostSlot | None = None
            if ep is not None and ep.url and ep.enabled and not ep.deleted:
                try:
                    slot = self._slot(ep.url)
                except Exception:  # any URL httpx cannot parse: its attempt fails and says so
                    slot = None
                if slot is not None and slot.users >= self._host_limit:
                    busy.append(c)
                    continue
                if slot is not None:
                    slot.users += 1  # counted now, so the rest of this batch sees it
                    self._instance_host[c.instance_id] = slot.key
            self._in_flight.add(c.id)
            self._spawn(self._deliver(c, ep, slot), name="webhook-delivery")
        metrics.IN_FLIGHT.set(len(self._in_flight))
        if busy:
            # Due again at once: other replicas may take them; this one excludes them while full.
            await self.repo.deliveries.release_many(busy, delay=timedelta(0))

    def _slot(self, url: str) -> _HostSlot:
        """The concurrency slot of the URL's endpoint (``scheme://host:port``)."""
        parsed = httpx.URL(url)
        if not parsed.host:
            raise ValueError("URL has no host")
        key = f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        slot = self._hosts.get(key)
        if slot is None:
            slot = self._hosts[key] = _HostSlot(key, asyncio.Semaphore(self.settings.per_host_concurrency))
        return slot

    def _leave(self, slot: _HostSlot) -> None:
        """One delivery of ``slot``'s endpoint is done here."""
        slot.users -= 1
        if slot.users in (self._host_limit - 1, self.settings.per_host_concurrency):
            self.wake()  # room again (or the queue drained): claim more for this endpoint
        if slot.users == 0:
            self._hosts.pop(slot.key, None)
            for iid in [i for i, k in self._instance_host.items() if k == slot.key]:
                del self._instance_host[iid]

    # --- one delivery ---------------------------------------------------------------------------

    def _attempt_done(self) -> None:
        self._attempting -= 1
        if self._attempting == 0:
            self._no_attempts.set()

    async def _cancel(self, c: Claimed, reason: str) -> None:
        await self.repo.deliveries.cancel(c, reason)
        metrics.DELIVERIES_FINISHED.labels(DeliveryStatus.CANCELLED.value).inc()

    async def _deliver(self, c: Claimed, ep: EndpointView | None, slot: _HostSlot | None) -> None:
        try:
            if ep is None or ep.deleted:
                return await self._cancel(c, "instance deleted")
            if not ep.enabled or not ep.url:
                return await self._cancel(c, "webhooks disabled or no webhook URL")
            if slot is None:
                # Not the URL itself in the text: a URL may carry a token in its path or query.
                await self.attempts.fail(c, ep, "invalid webhook URL (not parseable, or no host)")
                return
            async with slot.sem:
                # Renew the lease unless the claim's lease still covers this attempt with margin.
                if self.clock() + self._margin > c.locked_until and not await self.repo.deliveries.renew(
                    c, self._lease
                ):
                    return  # our lease ran out while queued; another claim owns it now
                if self._closing:
                    return  # shutting down: the lease runs out and the delivery is taken again
                self._attempting += 1
                self._no_attempts.clear()
                try:
                    result = await self.attempts.attempt(c, ep)
                except BaseException:
                    self._attempt_done()
                    raise
            # The endpoint's slot is free as soon as the answer is in; recording waits for its window.
            self._leave(slot)
            slot = None
            try:
                await self.attempts.finish(c, ep, result)
            finally:
                self._attempt_done()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery failed unexpectedly; retried after its lease", delivery_id=c.id)
        finally:
            if slot is not None:
                self._leave(slot)
            self._in_flight.discard(c.id)
            metrics.IN_FLIGHT.set(len(self._in_flight))
