"""The simulator CLI as a process (``python -m wa_session_worker.sim``) against a live engine."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from conftest import wait_for
from wa_session_worker.engines.base import Connected, EngineEvent, Message, QrCode
from wa_session_worker.engines.simulator import SimTimings, SimulatorEngine


async def run_cli(amqp_url: str, *args: str, engine: str = "simulator") -> tuple[int, str, str]:
    env = {**os.environ, "AMQP_URL": amqp_url, "WA_ENGINE": engine}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wa_session_worker.sim",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_scans_sends_and_lists(amqp_url: str, tmp_path: Path) -> None:
    events: list[EngineEvent] = []

    async def record(event: EngineEvent) -> None:
        events.append(event)

    def of(kind: type) -> list[Any]:
        return [e for e in events if isinstance(e, kind)]

    engine = SimulatorEngine(record, amqp_url=amqp_url, timings=SimTimings(qr_first_s=30), node="cli-node")
    await engine.start()
    try:
        await engine.start_session("inst-cli", None)
        qr = (await wait_for(lambda: of(QrCode)))[0]
        code, out, err = await run_cli(
            amqp_url, "scan", qr.code, "--phone", "+1 555 700 0001", "--name", "Cli"
        )
        assert code == 0, err
        assert "15557000001" in out
        await wait_for(lambda: of(Connected))

        code, out, err = await run_cli(
            amqp_url, "send", "--from", "447700900555", "--to", "15557000001", "--text", "hi from cli"
        )
        assert code == 0, err
        message_id = out.strip()
        got = (await wait_for(lambda: of(Message)))[0]
        assert (got.message_id, got.text, got.sender_jid) == (
            message_id,
            "hi from cli",
            "447700900555@s.whatsapp.net",
        )

        photo = tmp_path / "photo.png"
        photo.write_bytes(b"\x89PNG fake")
        code, _, err = await run_cli(
            amqp_url,
            "send",
            "--from",
            "447700900555",
            "--to",
            "15557000001",
            "--file",
            str(photo),
            "--text",
            "cap",
        )
        assert code == 0, err
        media_msg = (await wait_for(lambda: len(of(Message)) == 2 and of(Message)))[1]
        assert media_msg.type == "image" and media_msg.media.data == b"\x89PNG fake"
        assert media_msg.media.mimetype == "image/png" and media_msg.media.filename == "photo.png"

        code, out, err = await run_cli(amqp_url, "list")
        assert code == 0, err
        assert "worker cli-node" in out and "inst-cli" in out and "15557000001@s.whatsapp.net" in out

        code, _, err = await run_cli(amqp_url, "scan", "2@nope,a,b,c", "--phone", "15557000002")
        assert code == 1 and "no session shows this QR" in err

        code, _, err = await run_cli(amqp_url, "list", engine="neonize")
        assert code == 2 and "neonize" in err
    finally:
        await engine.close()
