"""Live sessions on the simulated network: going live, presence announcements, double
connections, the broker connection's loss and return, and roll calls.

A live session announces ``presence.<user>`` at connect and every ``presence_interval_s``. When a
session hears another live session of the *same device*, the one that started first is replaced
(WhatsApp's "stream replaced"): it counts ``wa_sim_double_connections_total``, publishes
``alert.double_connection`` and emits ``Disconnected(reason="stream_replaced",
will_reconnect=False)``. Each double connection is counted once on the whole network.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from wa_common.logs import get_logger
from wa_common.schemas.sim import (
    SimDoubleConnection,
    SimPresence,
    SimRollCallAnswer,
    SimSessionInfo,
)
from wa_session_worker.engines.base import Connected, Disconnected, SessionStatus
from wa_session_worker.engines.metrics import SIM_DOUBLE_CONNECTIONS
from wa_session_worker.engines.simulator.registry import SimSessions
from wa_session_worker.engines.simulator.session import SimSession, SimTimings

log = get_logger(__name__)


class Presence:
    """``node``: this worker's name on the network."""

    def __init__(self, sessions: SimSessions, timings: SimTimings, node: str) -> None:
        self.sessions = sessions
        self.network = sessions.network
        self.timings = timings
        self.node = node
        self.double_connections = 0  # detected by this engine (also the Prometheus counter)

    async def go_live(self, session: SimSession) -> None:
        """Bind the account's keys, announce the session and report it connected."""
        user = session.user
        assert user is not None and session.jid is not None
        for kind in ("presence", "msg", "rcpt", "ctl"):
            await self.network.bind(session, f"{kind}.{user}")
        session.started_at_ms = int(time.time() * 1000)
        session.status = SessionStatus.CONNECTED
        await self._announce(session)
        await self.sessions.emit(Connected(session.instance_id, session.jid, session.push_name))
        self.sessions.spawn(session, self._heartbeat(session), "sim-presence")

    async def _heartbeat(self, session: SimSession) -> None:
        while True:
            await asyncio.sleep(self.timings.presence_interval_s)
            if session.live:
                await self._announce_quietly(session)

    async def _announce(self, session: SimSession) -> None:
        assert session.jid is not None and session.device_id is not None and session.user
        presence = SimPresence(
            jid=session.jid,
            session_id=session.session_id,
            device_id=session.device_id,
            started_at_ms=session.started_at_ms,
            worker=self.node,
        )
        await self.network.publish(f"presence.{session.user}", presence.to_bytes(), mandatory=False)

    async def _announce_quietly(self, session: SimSession) -> None:
        """Announce ``session``; a failure is logged (the next announcement may succeed)."""
        try:
            await self._announce(session)
        except Exception as exc:
            log.warning("presence announce failed", instance_id=session.instance_id, error=str(exc))

    async def on_presence(self, key: str, presence: SimPresence) -> None:
        """Another session of the account announced itself: replace ours if it is the older one
        of the same device."""
        for session in self.sessions.targets(key):
            if (
                not session.live
                or session.device_id != presence.device_id
                or session.session_id == presence.session_id
            ):
                continue
            if (session.started_at_ms, session.session_id) > (presence.started_at_ms, presence.session_id):
                continue  # we are the newer session: the other one is replaced when it hears us
            self.double_connections += 1
            SIM_DOUBLE_CONNECTIONS.inc()
            log.error(
                "double connection: this session was replaced by another live session of its device",
                instance_id=session.instance_id,
                jid=session.jid,
                other_worker=presence.worker,
            )
            alert = SimDoubleConnection(
                jid=presence.jid,
                replaced_session_id=session.session_id,
                replaced_worker=self.node,
                by_session_id=presence.session_id,
                by_worker=presence.worker,
            )
            await self.network.publish("alert.double_connection", alert.to_bytes(), mandatory=False)
            await self.sessions.end(
                session.instance_id,
                Disconnected(session.instance_id, reason="stream_replaced", will_reconnect=False),
            )

    async def answer_roll_call(self, reply_to: str | None) -> None:
        """List this node's sessions to whoever called the roll (on ``reply_to``)."""
        if reply_to:
            answer = SimRollCallAnswer(
                worker=self.node,
                sessions=[
                    SimSessionInfo(
                        instance_id=s.instance_id,
                        status=s.status.value,
                        jid=s.jid,
                        push_name=s.push_name,
                        contacts=s.contacts,
                    )
                    for s in self.sessions.all()
                ],
            )
            await self.network.reply(reply_to, answer.to_bytes())

    # --- connection loss --------------------------------------------------------------------

    def on_connection_lost(self, *_: Any) -> None:
        for session in self.sessions.all():
            if session.live:
                session.status = SessionStatus.CONNECTING
                session.interrupted = True
                self.sessions.tasks.spawn(
                    self.sessions.emit(
                        Disconnected(session.instance_id, reason="network", will_reconnect=True)
                    ),
                    name="sim-disconnected",
                )

    def on_reconnected(self, *_: Any) -> None:
        self.sessions.tasks.spawn(self._after_reconnect(), name="sim-reconnected")

    async def _after_reconnect(self) -> None:
        # aio-pika re-declares this node's queue and its bindings; announce and report live again.
        for session in self.sessions.all():
            if session.interrupted and session.jid:
                session.interrupted = False
                session.status = SessionStatus.CONNECTED
                await self._announce_quietly(session)
                await self.sessions.emit(Connected(session.instance_id, session.jid, session.push_name))
