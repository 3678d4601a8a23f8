"""The simulator CLI (``python -m wa_session_worker.sim``) playing a phone of the simulated network,
for the end-to-end tests and the demo."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def send_file(
    sender: str, to: str, file: Path, *, text: str, name: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The phone ``sender`` (display name ``name``) sends ``file`` with the caption ``text`` to
    ``to``. Returns the finished CLI process, whatever its exit code; ``env`` replaces the
    environment (the CLI reads ``AMQP_URL``)."""
    command = ["send", "--from", sender, "--to", to, "--file", str(file), "--text", text, "--name", name]
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "wa_session_worker.sim", *command],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
