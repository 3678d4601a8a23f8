"""``make run``'s launcher: start every service of the ``Procfile`` with honcho, and print the
banner (gateway URL, admin credentials) only once every service answers ``GET /readyz`` with 200.

Usage (the Makefile passes these)::

    python tools/run_system.py --admin "admin@example.com / admin123" [--procfile Procfile]

- Readiness: each service's ``http://127.0.0.1:<port>/readyz``, ports from the same variables the
  ``Procfile`` uses (``AUTH_PORT`` 8081, ``STATS_PORT`` 8082, ``WEBHOOKS_PORT`` 8083,
  ``WORKER1_PORT`` 8084, ``WORKER2_PORT`` 8085, ``GATEWAY_PORT`` 8080), polled every 0.25 s. The
  banner says how long the start took (seconds, wall clock). A service not ready after
  ``--ready-timeout`` seconds (default 90) is named in one clear line (with what its ``/readyz``
  last said); the launcher keeps waiting and prints the banner when it comes up.
- Stopping: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM stops honcho and with it
  every service; the launcher then exits 0 ("stopped"), so ``make`` ends without an error line.
  If honcho ends by itself (a service exited), the launcher says so and exits 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import FrameType

POLL_S = 0.25
SHIPPED_ADMIN_PASSWORD = "admin123"  # noqa: S105 (the embedded default, named to warn about it)


@dataclass(frozen=True)
class Service:
    name: str
    port: int

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/readyz"


def services(env: dict[str, str]) -> list[Service]:
    """The ``Procfile``'s services and their ports (the same variables and defaults)."""

    def port(name: str, default: int) -> int:
        return int(env.get(name) or default)

    return [
        Service("auth", port("AUTH_PORT", 8081)),
        Service("stats", port("STATS_PORT", 8082)),
        Service("webhooks", port("WEBHOOKS_PORT", 8083)),
        Service("worker-1", port("WORKER1_PORT", 8084)),
        Service("worker-2", port("WORKER2_PORT", 8085)),
        Service("gateway", port("GATEWAY_PORT", 8080)),
    ]


def readiness(service: Service) -> str | None:
    """``None`` when ``/readyz`` answers 200, else what it said (status and body, or the error)."""
    try:
        with urllib.request.urlopen(service.ready_url, timeout=2) as response:  # noqa: S310 (loopback)
            return None if response.status == 200 else f"{response.status}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(200).decode(errors='replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"not answering ({reason})"


def banner(elapsed_s: float, gateway: Service, admin: str) -> str:
    line = "=" * 64
    engine = os.environ.get("WA_ENGINE", "simulator")
    profile = os.environ.get("WA_PROFILE", "embedded")
    url = f"http://127.0.0.1:{gateway.port}"
    return "\n".join(
        [
            line,
            f" Ready in {elapsed_s:.1f} s: every service answers /readyz",
            f" Gateway:  {url}",
            f" API docs: {url}/docs",
            f" Admin:    {admin}",
            f" Engine:   {engine}   Profile: {profile}   Stop: Ctrl-C",
            *(
                [
                    " SECURITY: the admin password is the shipped default: change it (dashboard Account"
                    " page, or POST /api/auth/password) before anyone else can reach this machine"
                ]
                if admin.endswith(f" / {SHIPPED_ADMIN_PASSWORD}")
                else []
            ),
            line,
        ]
    )


class Launcher:
    def __init__(self, procfile: str, admin: str, ready_timeout_s: float) -> None:
        self.procfile = procfile
        self.admin = admin
        self.ready_timeout_s = ready_timeout_s
        self.stopping = False
        self.honcho: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        if self.honcho is not None and self.honcho.poll() is None and signum == signal.SIGTERM:
            self.honcho.send_signal(signal.SIGTERM)  # Ctrl-C reaches honcho by itself

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        honcho = os.path.join(os.path.dirname(sys.executable), "honcho")
        started = time.monotonic()
        self.honcho = subprocess.Popen([honcho, "start", "-f", self.procfile])  # noqa: S603
        pending = services(dict(os.environ))
        gateway = pending[-1]
        said: dict[str, str] = {}
        warned = False
        while pending and not self.stopping:
            if self.honcho.poll() is not None:
                print(
                    f"run: a service exited during the start: {', '.join(s.name for s in pending)} "
                    "never became ready (see its lines above)",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            for service in list(pending):
                state = readiness(service)
                if state is None:
                    pending.remove(service)
                else:
                    said[service.name] = state
            if pending and not warned and time.monotonic() - started > self.ready_timeout_s:
                warned = True
                names = "; ".join(f"{s.name} ({s.ready_url}: {said.get(s.name, '?')})" for s in pending)
                print(
                    f"run: not ready after {self.ready_timeout_s:.0f} s: {names}. Still waiting; "
                    "Ctrl-C to stop.",
                    file=sys.stderr,
                    flush=True,
                )
            if pending:
                time.sleep(POLL_S)
        if not self.stopping:
            print(banner(time.monotonic() - started, gateway, self.admin), flush=True)
        code = self.honcho.wait()
        if self.stopping:
            print("run: stopped", flush=True)
            return 0
        print(
            f"run: the services stopped (honcho exited with {code}); see the lines above",
            file=sys.stderr,
            flush=True,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--procfile", default="Procfile")
    parser.add_argument("--admin", default="admin@example.com / admin123", help="shown in the banner")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds before naming laggards")
    args = parser.parse_args(argv)
    return Launcher(args.procfile, args.admin, args.ready_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
