"""neonize clients and their threads: the engine-wide setup (Go log level, executor, SQLite
directory), one Go client per connection attempt, retried with backoff, and stopping it.

Hazards (NEONIZE.md) contained here:

- 1, concurrent starts: one engine-wide lock is held while a client starts (from ``connect()``
  until its first event, its failure, or ``START_SETTLE_S``) and while one stops, so Go's
  unguarded global client maps are never written concurrently.
- 3, finalizers: one client object per attempt, held by the session until it is stopped; its GC
  finalizer (which would call ``Stop(uuid)`` on a reused uuid) is detached once we stopped it.
- Wrapped handlers: the Go-side callbacks (:func:`.events.subscribe`) only enqueue the protobuf on
  the session's inbox.
- Executor sizing: each live session holds one thread of the loop's default executor for its
  whole life, hence a default executor of ``neonize_executor_threads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from neonize.aioze.client import NewAClient
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from wa_common.logs import get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import (
    Disconnected,
    EngineEvent,
    SessionStatus,
    cancel_session_tasks,
    spawn_session_task,
)
from wa_session_worker.engines.metrics import ENGINE_ERRORS
from wa_session_worker.engines.neonize_engine.events import subscribe
from wa_session_worker.engines.neonize_engine.session import CALL_TIMEOUT_S, ENGINE, NeonizeSession
from wa_session_worker.engines.neonize_engine.translate import jid_from_fields
from wa_session_worker.engines.settings import EngineSettings

log = get_logger(__name__)

START_SETTLE_S = 5.0  # the start lock is held at most this long per client start


class _DialFailed(Exception):
    """A connection attempt ended with an error; retried with backoff."""


class Clients:
    """The Go clients of the engine's sessions; ``emit`` reports a failed attempt, ``tasks`` runs
    the sessions' background tasks."""

    def __init__(
        self,
        settings: EngineSettings,
        tasks: TaskSupervisor,
        emit: Callable[[EngineEvent], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self._tasks = tasks
        self._emit = emit
        self._go_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def store_kind(self) -> str:
        return "postgres" if self.settings.neonize_store_url.startswith("postgres") else "sqlite"

    async def start(self) -> None:
        """Set the Go log level, size the default executor, prepare the SQLite directory."""
        level = self.settings.neonize_go_log_level.upper()
        for name in ("neonize.utils.log", "whatsmeow", "Whatsmeow"):
            logging.getLogger(name).setLevel(level)
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.neonize_executor_threads, thread_name_prefix="neonize"
        )
        asyncio.get_running_loop().set_default_executor(self._executor)
        if self.store_kind == "sqlite":
            await asyncio.to_thread(Path(self.settings.neonize_sqlite_dir).mkdir, parents=True, exist_ok=True)

    def spawn(self, session: NeonizeSession, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task of ``session`` (cancelled when it shuts down)."""
        spawn_session_task(self._tasks, session.tasks, coro, name)

    # --- connecting ---------------------------------------------------------------------------

    async def supervise(self, session: NeonizeSession) -> None:
        """Connect, and reconnect after each failed attempt with capped exponential backoff,
        until the session is stopped."""
        retrying = AsyncRetrying(
            wait=wait_exponential(
                multiplier=self.settings.neonize_retry_initial_s, max=self.settings.neonize_retry_max_s
            ),
            retry=retry_if_exception_type(_DialFailed),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._run_once(session)

    def _new_client(self, session: NeonizeSession) -> NewAClient:
        if self.store_kind == "postgres":
            name = self.settings.neonize_store_url
        else:
            name = str(Path(self.settings.neonize_sqlite_dir) / f"{session.instance_id}.db")
        if session.device is not None:
            return NewAClient(name, jid=jid_from_fields(session.device.data))
        return NewAClient(name, uuid=session.instance_id, new_device=True)

    async def _run_once(self, session: NeonizeSession) -> None:
        client = self._new_client(session)
        session.client = client
        subscribe(session, client)
        session.first_sign.clear()
        async with self._go_lock:  # hazard 1: one Go-side start at a time
            task = await client.connect()
            waiter = asyncio.ensure_future(session.first_sign.wait())
            try:
                await asyncio.wait(
                    [task, waiter], timeout=START_SETTLE_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
        try:
            await task
            if not session.stopping:
                raise RuntimeError("the WhatsApp connection ended")
        except Exception as exc:
            if session.stopping:
                return
            reason = str(exc) or type(exc).__name__
            ENGINE_ERRORS.labels(ENGINE, "connect").inc()
            log.warning("whatsapp connection failed; retrying", instance_id=session.instance_id, error=reason)
            session.status = SessionStatus.DISCONNECTED
            session.live = False
            await self._stop_client(session)
            await self._emit(Disconnected(session.instance_id, reason=reason, will_reconnect=True))
            raise _DialFailed(reason) from exc

    # --- stopping -----------------------------------------------------------------------------

    async def _stop_client(self, session: NeonizeSession) -> None:
        """Stop the Go client under the engine lock, then detach its finalizer (hazard 3)."""
        client, session.client = session.client, None
        if client is None:
            return
        session.live = False
        async with session.lock, self._go_lock:
            try:
                await asyncio.wait_for(client.stop(), CALL_TIMEOUT_S)
            except Exception as exc:
                log.warning("neonize stop failed", instance_id=session.instance_id, error=str(exc))
        finalizer = getattr(client, "_stop_finalizer", None)
        if finalizer is not None:
            finalizer.detach()

    async def shutdown(self, session: NeonizeSession) -> None:
        """Stop the session for good here: its client, then its tasks (except the caller)."""
        session.stopping = True
        session.status = SessionStatus.DISCONNECTED
        await self._stop_client(session)
        cancel_session_tasks(session.tasks)

    def delete_sqlite(self, instance_id: str) -> None:
        """Delete the instance's SQLite device store (its keys), if the store is SQLite."""
        if self.store_kind == "sqlite":
            with contextlib.suppress(FileNotFoundError):
                (Path(self.settings.neonize_sqlite_dir) / f"{instance_id}.db").unlink()
