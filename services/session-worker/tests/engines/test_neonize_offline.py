"""The neonize engine without network access: the real library fails to dial WhatsApp; the
session reports it, is retried with capped exponential backoff, and the process stays up.

The engine runs in a child process (a Go-side abort would otherwise kill the test runner); it
prints its events as JSON lines. Also: the engine's own event handling, fed real protobufs."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import textwrap
from pathlib import Path

from neonize.aioze.events import (
    ConnectedEv,
    DisconnectedEv,
    LoggedOutEv,
    PairStatusEv,
    StreamReplacedEv,
)
from neonize.utils.jid import build_jid

from wa_session_worker.engines.base import (
    Connected,
    Disconnected,
    EngineEvent,
    LoggedOut,
    Paired,
    QrCode,
    SessionStatus,
)
from wa_session_worker.engines.neonize_engine.engine import NeonizeEngine
from wa_session_worker.engines.neonize_engine.session import NeonizeSession
from wa_session_worker.engines.settings import EngineSettings

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from wa_session_worker.engines.factory import build_engine
    from wa_session_worker.engines.settings import EngineSettings

    async def main():
        events = []
        async def on_event(event):
            events.append(event)
            line = {"t": time.monotonic(), "kind": type(event).__name__, **vars(event)}
            print(json.dumps(line), flush=True)
        settings = EngineSettings(
            WA_PROFILE="dev", WA_ENGINE="neonize", neonize_sqlite_dir=sys.argv[1],
            neonize_retry_initial_s=0.3, neonize_retry_max_s=0.6, neonize_executor_threads=16,
        )
        engine = build_engine(settings, on_event)
        await engine.start()
        await engine.start_session("inst-offline", None)
        deadline = time.monotonic() + 40
        while sum(type(e).__name__ == "Disconnected" for e in events) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        print(json.dumps({"kind": "status", "status": engine.status("inst-offline")}), flush=True)
        await engine.stop_session("inst-offline")
        await engine.close()
        print(json.dumps({"kind": "alive"}), flush=True)

    asyncio.run(main())
    """
)


async def test_offline_session_reports_the_dial_error_and_retries_with_backoff(tmp_path: Path) -> None:
    script = tmp_path / "offline.py"
    script.write_text(SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path / "neonize"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    disconnected = [e for e in lines if e["kind"] == "Disconnected"]
    assert len(disconnected) >= 4, lines
    assert all("dial" in e["reason"] and e["will_reconnect"] for e in disconnected), disconnected
    assert not [e for e in lines if e["kind"] in ("Connected", "LoggedOut")]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(disconnected)]
    assert gaps[0] >= 0.25, gaps  # first retry after ~0.3 s
    assert gaps[-1] >= 0.5, gaps  # doubled, then capped at 0.6 s
    assert max(gaps) < 5, gaps
    status = next(e for e in lines if e["kind"] == "status")
    assert status["status"] == "disconnected"
    assert lines[-1]["kind"] == "alive"


class _Recorder:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []

    async def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)


async def test_engine_event_handling_with_real_protobufs(tmp_path: Path) -> None:
    recorder = _Recorder()
    settings = EngineSettings(WA_PROFILE="dev", WA_ENGINE="neonize", neonize_sqlite_dir=str(tmp_path))
    engine = NeonizeEngine(settings, recorder)
    session = NeonizeSession("inst", None)
    engine._sessions["inst"] = session

    await engine._events.handle(session, ("qr", "2@ref,noise,identity,adv"))
    await engine._events.handle(session, ("qr", "2@ref2,noise,identity,adv"))
    assert engine.status("inst") == SessionStatus.QR
    device = build_jid("15550001111")
    device.Device = 3
    await engine._events.handle(
        session, PairStatusEv(ID=device, Platform="android", Status=PairStatusEv.SUCCESS)
    )
    await engine._events.handle(session, ConnectedEv(status=True))
    assert engine.status("inst") == SessionStatus.CONNECTED
    await engine._events.handle(session, DisconnectedEv(status=True))
    assert engine.status("inst") == SessionStatus.CONNECTING
    await engine._events.handle(session, ConnectedEv(status=True))
    kinds = [type(e) for e in recorder.events]
    assert kinds == [QrCode, QrCode, Paired, Connected, Disconnected, Connected]
    qr1, qr2 = recorder.events[0], recorder.events[1]
    assert isinstance(qr1, QrCode) and isinstance(qr2, QrCode)
    assert (qr1.attempt, qr1.expires_in_s, qr2.attempt, qr2.expires_in_s) == (1, 60.0, 2, 20.0)
    assert recorder.events[3] == Connected("inst", "15550001111@s.whatsapp.net")
    assert recorder.events[4] == Disconnected("inst", "connection_lost", True)

    await engine._events.handle(session, StreamReplacedEv())
    assert recorder.events[-1] == Disconnected("inst", "stream_replaced", False)
    assert engine.status("inst") == SessionStatus.DISCONNECTED and "inst" not in engine._sessions

    other = NeonizeSession("inst2", None)
    engine._sessions["inst2"] = other
    await engine._events.handle(other, LoggedOutEv(OnConnect=False))
    assert recorder.events[-1] == LoggedOut("inst2", "logged_out")
    assert "inst2" not in engine._sessions
    await engine.close()


def test_recipients_reach_whatsapp_only_as_ascii_digit_jids() -> None:
    """The engine's own parsing (its last line of defence) shares ``wa_common.jids``: it used
    ``str.isdigit``, which lets Arabic-Indic and fullwidth digits through."""
    import pytest

    from wa_session_worker.engines.base import EngineError
    from wa_session_worker.engines.neonize_engine.addresses import phone_digits, recipient_jid

    assert phone_digits("15550001111@s.whatsapp.net") == "15550001111"
    assert phone_digits("15550001111:3@s.whatsapp.net") == "15550001111"  # a linked device's suffix
    assert recipient_jid("120363025246125486@g.us").Server == "g.us"
    assert recipient_jid("15550001111").User == "15550001111"
    for bad in (
        "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0661",
        "\uff11\uff15\uff15\uff15\uff10\uff10\uff10",
        "1555\n0001111",
    ):
        with pytest.raises(EngineError) as refused:
            recipient_jid(bad)
        assert refused.value.status == 400
