"""One neonize session's state, and the guarded way to call its client (NEONIZE.md hazard 2:
some calls abort the process when the session has no live Go client)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from neonize.aioze.client import NewAClient

from wa_session_worker.engines.base import DeviceRecord, EngineError, SessionNotConnected, SessionStatus
from wa_session_worker.engines.metrics import ENGINE_ERRORS

ENGINE = "neonize"
CALL_TIMEOUT_S = 60.0  # longest a neonize call (send, query) may take


@dataclass
class NeonizeSession:
    instance_id: str
    device: DeviceRecord | None
    status: SessionStatus = SessionStatus.CONNECTING
    jid: str | None = None
    client: NewAClient | None = None
    live: bool = False
    stopping: bool = False
    first_sign: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    qr_attempt: int = 0
    qr_deadline: float = 0.0


async def call(session: NeonizeSession, operation: str, fn: Callable[[NewAClient], Awaitable[Any]]) -> Any:
    """Run ``fn(client)`` under the session lock while connected (hazard 2), bounded by
    ``CALL_TIMEOUT_S``; failures become :class:`EngineError` (502) and are counted."""
    async with session.lock:
        client = session.client
        if client is None or not session.live:
            raise SessionNotConnected(session.instance_id)
        try:
            return await asyncio.wait_for(fn(client), CALL_TIMEOUT_S)
        except SessionNotConnected:
            raise
        except Exception as exc:
            ENGINE_ERRORS.labels(ENGINE, operation).inc()
            raise EngineError(f"WhatsApp refused {operation}: {exc}") from exc
