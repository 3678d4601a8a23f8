"""Auth's tests start services as processes: start, wait until ready, stop.

Shared by ``test_integration.py`` (auth and two gateways) and ``test_security.py`` (auth alone).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conftest import wait_for

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def start_process(name: str, module: str, env: dict[str, str], port: int, tmp: Path) -> Proc:
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Proc(name, process, f"http://127.0.0.1:{port}", log)


def stop_process(proc: Proc) -> None:
    proc.process.terminate()
    try:
        proc.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.process.kill()
        proc.process.wait()


async def wait_ready(proc: Proc, path: str, restart: Any) -> Proc:
    """Wait until ``path`` answers 200. On a loaded machine the broker handshake can exceed the
    bus's 10 s connect timeout; a process whose startup failed is then started again (twice)."""
    attempts = 0
    async with httpx.AsyncClient(timeout=1.0) as client:

        async def up() -> bool:
            nonlocal proc, attempts
            failed = proc.process.poll() is not None or "Application startup failed" in proc.log.read_text(
                errors="replace"
            )
            if failed:
                attempts += 1
                if attempts > 2:
                    raise AssertionError(f"{proc.name} did not start:\n{proc.tail()}")
                stop_process(proc)
                proc.log.write_text("")
                proc = restart()
                return False
            try:
                return (await client.get(proc.url + path)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(up, timeout_s=75, interval_s=0.2, message=f"{proc.name} ready")
    return proc
