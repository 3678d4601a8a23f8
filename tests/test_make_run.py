"""``make run``, as a new user types it: the banner (URL, admin credentials) appears only once
every service answers ``/readyz``, and Ctrl-C stops everything without an error line (it used to
print the banner before anything listened, and end with ``make: *** [run] Error 130``).

The system runs on its embedded defaults (SQLite stores, simulator), moved to free ports and a
fresh vhost and data directory so it never meets a developer's own ``make run``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import AMQP_HOST, VhostFactory
from tests.harness import ROOT, free_port

pytestmark = pytest.mark.e2e

PORT_VARIABLES = ("AUTH_PORT", "STATS_PORT", "WEBHOOKS_PORT", "WORKER1_PORT", "WORKER2_PORT", "GATEWAY_PORT")


class Output:
    """Lines of a process's output, collected by a thread (readable with a deadline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float) -> int:
        """Index of the first line containing ``text``; fails at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index, line in enumerate(list(self.lines)):
                if text in line:
                    return index
            if self._proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.05)
        tail = "\n".join(self.lines[-40:])
        raise AssertionError(f"{text!r} did not appear within {timeout_s}s:\n{tail}")


# Late in the full suite a worker's start has been seen to wait minutes on a broker channel after
# "bus connected" (open problem, see the issue-14 closing note): the wait is bounded generously.
@pytest.mark.timeout(480)
def test_make_run_prints_the_banner_once_every_service_answers_ready(
    vhost_factory: VhostFactory, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in PORT_VARIABLES}
    vhost = vhost_factory()
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env.update({name: str(port) for name, port in ports.items()})
    env.update(
        {
            "AMQP_URL": f"amqp://guest:guest@{AMQP_HOST}/{vhost}",
            "WA_SHARDS": "8",
            "AUTH_DATABASE_URL": f"sqlite:///{tmp_path}/auth.db",
            "STATS_DATABASE_URL": f"sqlite:///{tmp_path}/stats.db",
            "WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/webhooks.db",
            "WORKER_DATABASE_URL": f"sqlite:///{tmp_path}/worker.db",
            "AUTH_DATA_DIR": str(tmp_path / "auth-data"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C addresses
    )
    output = Output(proc)
    try:
        index = output.wait_for(" Ready in ", timeout_s=360)
        # The banner is out: every service must answer ready now (it used to print first).
        with httpx.Client(timeout=5) as client:
            for name, port in ports.items():
                response = client.get(f"http://127.0.0.1:{port}/readyz")
                assert response.status_code == 200, (name, response.text)
        banner = "\n".join(output.lines[index : index + 6])
        assert f"http://127.0.0.1:{ports['GATEWAY_PORT']}" in banner
        assert "Admin:" in banner
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    output.wait_for("run: stopped", timeout_s=10)
    vhost_factory.release(vhost)
    text = "\n".join(output.lines)
    # make itself got the SIGINT too: it ends by it (as any program on Ctrl-C) or with 0, and
    # prints no "make: *** [run] Error 130" (the launcher exits 0 after a clean stop).
    assert code in (0, -signal.SIGINT), text[-3000:]
    assert "make: ***" not in text and "Traceback" not in text, text[-3000:]
