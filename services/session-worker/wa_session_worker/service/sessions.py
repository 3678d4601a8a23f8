"""The WhatsApp sessions of the shards this worker owns, and the shard owner.

Three parts, built in this order (the engine reports its events to the recorder, which must know
which sessions run here; so that knowledge exists before the engine, and the engine before the
parts that call it):

- :class:`Running`: the sessions running here (instance id → shard), a "connected" signal per
  session, and the shards whose queue is consumed here. It calls nothing.
- :class:`Sessions`: start and stop sessions (from their stored device records: no new QR scan),
  wait for a session that is still connecting, the session gauge.
- :class:`SessionCommands`: the base of the parts that run an instance's commands on its
  session (instances, messaging, contacts).
- :class:`ShardRunner`: the :class:`~wa_session_worker.shards.manager.ShardOwner`. When a shard
  is acquired it starts the sessions of that shard's instances, then consumes ``wa.shard.<k>``;
  when a shard is given up or lost it stops consuming, then stops the sessions (the lease is
  released only after that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from wa_common.bus import Bus, Consumer, shard_queue
from wa_common.bus.client import Handler
from wa_common.clock import Clock, utcnow
from wa_common.logs import get_logger
from wa_common.schemas import Request
from wa_common.schemas.status import InstanceStatus
from wa_session_worker.engines.base import DeviceRecord, Engine, SessionNotConnected, SessionStatus
from wa_session_worker.metrics import FAILOVER_START_SECONDS, SESSION_STARTS, SESSIONS
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import InstanceRec
from wa_session_worker.settings import WorkerSettings

if TYPE_CHECKING:
    from wa_session_worker.service.recorder import Recorder

log = get_logger(__name__)

CONNECT_WAIT_S = 10.0  # longest a command waits for a session that is still connecting
CONSUMER_DRAIN_S = 30.0  # longest wait for in-flight commands when a shard queue is released
TAKEOVER = "takeover"  # the reason of a session started with its shard


class Running:
    """What runs in this worker: sessions (instance id → shard), their "connected" signals, and
    the shards whose commands are consumed here (``open_shards``)."""

    def __init__(self) -> None:
        self._shards: dict[str, int] = {}
        self._connected: dict[str, asyncio.Event] = {}  # set while the session is connected
        self.open_shards: set[int] = set()

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._shards

    def __len__(self) -> int:
        return len(self._shards)

    def ids(self, shard: int | None = None) -> list[str]:
        """The running sessions (of ``shard`` only, when given)."""
        return [i for i, k in self._shards.items() if shard is None or k == shard]

    def add(self, instance_id: str, shard: int) -> None:
        self._shards[instance_id] = shard

    def remove(self, instance_id: str) -> bool:
        """Forget the session; whether it was running."""
        return self._shards.pop(instance_id, None) is not None

    def connected(self, instance_id: str) -> asyncio.Event:
        """The signal set while the session is connected."""
        event = self._connected.get(instance_id)
        if event is None:
            event = self._connected[instance_id] = asyncio.Event()
        return event

    def forget(self, instance_id: str) -> None:
        """Drop everything kept about an instance (deleted)."""
        self._shards.pop(instance_id, None)
        self._connected.pop(instance_id, None)


class Sessions:
    """Starting and stopping sessions with the engine, bounded by
    ``WORKER_SESSION_START_CONCURRENCY`` concurrent starts."""

    def __init__(self, settings: WorkerSettings, engine: Engine, running: Running) -> None:
        self.engine = engine
        self.running = running
        self._start_sem = asyncio.Semaphore(settings.session_start_concurrency)

    async def start(self, rec: InstanceRec, *, reason: str) -> None:
        """Start ``rec``'s session (resumed from its device record when it has one). Outside a
        shard takeover, only while its shard's queue is consumed here: a command still in flight
        while its shard is being released leaves the session to the shard's next owner."""
        if reason != TAKEOVER and rec.shard not in self.running.open_shards:
            log.warning(
                "session not started: shard no longer owned here", instance_id=rec.id, shard=rec.shard
            )
            return
        device = DeviceRecord(rec.device_jid, rec.device_data or {}) if rec.device_jid else None
        async with self._start_sem:
            self.running.add(rec.id, rec.shard)
            try:
                await self.engine.start_session(rec.id, device)
            except Exception:
                self.running.remove(rec.id)
                log.exception("session start failed", instance_id=rec.id)
                return
        SESSION_STARTS.labels(reason).inc()

    async def stop(self, instance_id: str) -> None:
        self.running.connected(instance_id).clear()
        if not self.running.remove(instance_id):
            return
        try:
            await self.engine.stop_session(instance_id)
        except Exception:
            log.exception("session stop failed", instance_id=instance_id)

    async def stop_all(self) -> None:
        """Stop every session still running here (shutdown after the shards were released)."""
        await asyncio.gather(*(self.stop(i) for i in self.running.ids()))

    def require(self, instance_id: str) -> None:
        """409 unless the instance's session runs here."""
        if instance_id not in self.running:
            raise SessionNotConnected(instance_id)

    async def await_connected(self, instance_id: str, request: Request) -> None:
        """Wait (bounded by the request's deadline and ``CONNECT_WAIT_S``) for a session that is
        still connecting, e.g. just taken over from a dead worker; 409 if it does not connect."""
        self.require(instance_id)
        status = self.engine.status(instance_id)
        if status == SessionStatus.CONNECTED:
            return
        if status != SessionStatus.CONNECTING:
            raise SessionNotConnected(instance_id)
        wait_s = min(CONNECT_WAIT_S, request.remaining_s() - 0.5)
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.running.connected(instance_id).wait(), wait_s)
        if self.engine.status(instance_id) != SessionStatus.CONNECTED:
            raise SessionNotConnected(instance_id)

    def update_gauge(self) -> None:
        counts = dict.fromkeys([s.value for s in SessionStatus], 0)
        for instance_id in self.running.ids():
            counts[self.engine.status(instance_id).value] += 1
        for status, count in counts.items():
            SESSIONS.labels(status).set(count)


class SessionCommands:
    """What the parts running an instance's commands on its session use: the settings, the
    store, the engine, the sessions, the recorder (what they change is reported through it) and
    the clock."""

    def __init__(
        self,
        settings: WorkerSettings,
        repo: Repository,
        engine: Engine,
        sessions: Sessions,
        recorder: Recorder,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.engine = engine
        self.sessions = sessions
        self.running = sessions.running
        self.recorder = recorder
        self.clock = clock


class ShardRunner:
    """The shard owner the shard manager drives: a shard's sessions and the consumer of its
    queue (``commands``: the handler of the commands router)."""

    def __init__(
        self, sessions: Sessions, repo: Repository, bus: Bus, commands: Handler, recorder: Recorder
    ) -> None:
        self.sessions = sessions
        self.running = sessions.running
        self.repo = repo
        self.bus = bus
        self.commands = commands
        self.recorder = recorder
        self.consumers: dict[int, Consumer] = {}

    def owned_shards(self) -> list[int]:
        """Shards whose queue this worker consumes (their outbox entries are this worker's)."""
        return list(self.consumers)

    def session_count(self) -> int:
        return len(self.running)

    async def shard_acquired(self, shard: int) -> None:
        started = time.monotonic()
        recs = await self.repo.instances_in_shard(shard)
        resumable = [
            r for r in recs if r.device_jid or r.status in (InstanceStatus.CONNECTING, InstanceStatus.QR)
        ]
        for rec in recs:
            self.recorder.remember(rec.id, rec.user_id)
        await asyncio.gather(*(self.sessions.start(r, reason=TAKEOVER) for r in resumable))
        self.consumers[shard] = await self.bus.consume(shard_queue(shard), self.commands)
        self.running.open_shards.add(shard)
        FAILOVER_START_SECONDS.observe(time.monotonic() - started)
        log.debug(
            "shard started",
            shard=shard,
            sessions=len(resumable),
            seconds=round(time.monotonic() - started, 3),
        )

    async def shard_releasing(self, shard: int, *, urgent: bool) -> None:
        """Stop consuming the shard's queue and stop its sessions.

        Giving a shard up (``urgent`` false): in-flight commands finish first, then the sessions
        stop. Losing it (``urgent``): the sessions stop at once, while in-flight commands finish
        (they fail as not connected). The consumer's channel is closed only once its in-flight
        handlers are done (``CONSUMER_DRAIN_S`` at most), since an ack on a closed channel is a
        connection error that would drop every other consumer of this worker.
        """
        consumer = self.consumers.pop(shard, None)
        self.running.open_shards.discard(shard)
        ids = self.running.ids(shard)

        async def drain() -> None:
            if consumer is not None:
                await consumer.cancel(timeout_s=CONSUMER_DRAIN_S)

        async def stop() -> None:
            await asyncio.gather(*(self.sessions.stop(i) for i in ids))

        if urgent:
            await asyncio.gather(drain(), stop())
        else:
            await drain()
            await stop()
        self.recorder.feed.forget_shard(shard)
        log.debug("shard stopped", shard=shard, sessions=len(ids), urgent=urgent)
