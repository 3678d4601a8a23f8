"""Sessions: started only for shards consumed here, awaited while connecting, stopped.

The service's parts on the in-memory store with a scripted engine (``parts``). Shard ownership
itself (leases, failover, rebalancing) is tested in ``test_leases.py`` and ``test_cluster.py``."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from wa_common.clock import utcnow
from wa_common.ids import new_id
from wa_common.schemas.session import SessionCommand as C
from wa_session_worker.engines.base import Connected, SessionStatus

TEXT = {"phone": "15550000002", "message": "hi"}


async def test_a_send_waits_for_a_connecting_session_until_it_connects(parts: Any) -> None:
    """A session taken over from a dead worker is still connecting: a send waits for it and
    goes out as soon as it connects (not when the wait runs out)."""
    parts.engine.start_status = SessionStatus.CONNECTING
    iid = new_id()
    assert (await parts.cmd(C.CREATE_INSTANCE, iid, {"name": "slow"})).status == 201
    started = time.monotonic()
    send = asyncio.create_task(parts.cmd(C.SEND_TEXT, iid, TEXT))
    await asyncio.sleep(0.2)
    assert not send.done() and parts.engine.sent == []
    parts.engine.statuses[iid] = SessionStatus.CONNECTED
    await parts.worker.recorder.on_engine_event(Connected(iid, "15550000000@s.whatsapp.net"))
    reply = await asyncio.wait_for(send, 5)
    assert reply.ok and time.monotonic() - started < 3, reply
    assert len(parts.engine.sent) == 1


async def test_a_send_to_a_session_that_does_not_connect_is_409(parts: Any) -> None:
    parts.engine.start_status = SessionStatus.CONNECTING
    iid = new_id()
    assert (await parts.cmd(C.CREATE_INSTANCE, iid, {"name": "never"})).status == 201
    refused = await parts.cmd(C.SEND_TEXT, iid, TEXT, deadline=utcnow() + timedelta(seconds=1))
    assert refused.status == 409 and "not connected" in (refused.error or "")
    parts.engine.statuses[iid] = SessionStatus.QR  # linking: not waited for
    assert (await parts.cmd(C.SEND_TEXT, iid, TEXT)).status == 409
    await parts.worker.sessions.stop(iid)
    assert (await parts.cmd(C.SEND_TEXT, iid, TEXT)).status == 409
    assert (await parts.cmd(C.FETCH_CONTACTS, iid)).status == 409


async def test_no_session_starts_for_a_shard_no_longer_consumed_here(parts: Any) -> None:
    """A command still in flight while its shard is being released leaves the session to the
    shard's next owner; a shard takeover starts it."""
    running = parts.worker.sessions.running
    running.open_shards.clear()
    iid = new_id()
    assert (await parts.cmd(C.CREATE_INSTANCE, iid, {"name": "late"})).status == 201
    assert iid not in running and parts.engine.status(iid) == SessionStatus.DISCONNECTED
    rec = await parts.repo.get_instance(iid)
    await parts.worker.sessions.start(rec, reason="takeover")
    assert iid in running and parts.worker.shards.session_count() == 1
    await parts.worker.sessions.stop_all()
    assert len(running) == 0 and parts.engine.status(iid) == SessionStatus.DISCONNECTED
