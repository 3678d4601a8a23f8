"""The sessions this node runs, and what every part of the simulator engine does with them: find
one (live or by routing key), run its background tasks, report its events, end it."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from wa_common.logs import get_logger
from wa_common.tasks import TaskSupervisor
from wa_session_worker.engines.base import (
    EngineEvent,
    EventCallback,
    SessionNotConnected,
    SessionStatus,
    cancel_session_tasks,
    emit_event,
    spawn_session_task,
)
from wa_session_worker.engines.simulator.network import SimNetwork
from wa_session_worker.engines.simulator.session import ENGINE, SimSession

log = get_logger(__name__)


class SimSessions:
    """This node's sessions by instance id, on ``network``; their tasks run under ``tasks`` and
    their events go to ``on_event``."""

    def __init__(self, network: SimNetwork, tasks: TaskSupervisor, on_event: EventCallback) -> None:
        self.network = network
        self.tasks = tasks
        self._on_event = on_event
        self._by_id: dict[str, SimSession] = {}

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._by_id

    def get(self, instance_id: str) -> SimSession | None:
        return self._by_id.get(instance_id)

    def add(self, session: SimSession) -> None:
        self._by_id[session.instance_id] = session

    def all(self) -> list[SimSession]:
        return list(self._by_id.values())

    def live(self, instance_id: str) -> SimSession:
        """The connected session of ``instance_id``; :class:`SessionNotConnected` otherwise."""
        session = self._by_id.get(instance_id)
        if session is None or not session.live:
            raise SessionNotConnected(instance_id)
        return session

    def targets(self, key: str) -> list[SimSession]:
        """The sessions that bound routing key ``key``."""
        return [self._by_id[i] for i in self.network.routed(key) if i in self._by_id]

    def spawn(self, session: SimSession, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task of ``session`` (cancelled when it is torn down)."""
        spawn_session_task(self.tasks, session.tasks, coro, name)

    async def emit(self, event: EngineEvent) -> None:
        await emit_event(self._on_event, event, engine=ENGINE)

    async def teardown(self, instance_id: str) -> None:
        """Forget the session here: cancel its tasks (except the caller), drop its bindings."""
        session = self._by_id.pop(instance_id, None)
        if session is None:
            return
        session.status = SessionStatus.DISCONNECTED
        cancel_session_tasks(session.tasks)
        if session.paired is not None and not session.paired.done():
            session.paired.cancel()
        for key in list(session.keys):
            try:
                await self.network.unbind(session, key)
            except Exception as exc:
                log.warning("unbind failed", key=key, error=str(exc))

    async def end(self, instance_id: str, event: EngineEvent) -> None:
        """Tear the session down, then report how it ended."""
        await self.teardown(instance_id)
        await self.emit(event)
