"""Process harness: the real services as separate processes, for contract and end-to-end tests.

Each service runs as ``python -m wa_<name>`` (migrated first with ``python -m wa_<name> migrate``)
on a free port, with ``WA_PROFILE=embedded``, ``WA_ENGINE=simulator``, the test session's fresh
RabbitMQ vhost (``AMQP_URL``) and its own fresh PostgreSQL database (``<PREFIX>DATABASE_URL``,
created here and dropped at the end). ``start()`` returns once every process answers 200 on
``/readyz``; ``stop()`` sends SIGTERM, waits, then SIGKILLs what is left. Each process writes
its output to ``<work_dir>/<name>.log`` (``Cluster.log_tail(name)`` shows it in failures).

Usage (a session-scoped fixture, see ``tests/contract/conftest.py``)::

    cluster = Cluster(amqp_url, work_dir=tmp_path_factory.mktemp("cluster"))
    await cluster.start()               # auth, stats, webhooks, 1 worker, gateway
    try:
        httpx.get(f"{cluster.gateway_url}/api/instances", headers=cluster.admin_headers)
        ...
    finally:
        await cluster.stop()

Pick the services with ``services=`` (names of :data:`SERVICES`) and the number of session
workers with ``workers=``; add environment with ``env=`` (all processes) or
``service_env={"gateway": {...}}`` (one service). ``await cluster.restart("worker-1")``,
``cluster.kill("worker-1")`` (SIGKILL) and ``await cluster.add_worker()`` serve chaos tests.

``stores="sqlite"`` gives every service a SQLite file under ``work_dir`` instead of a PostgreSQL
database (the embedded profile's stores; the session workers share one file).

Environment: ``TEST_POSTGRES_URL`` (admin connection, default
``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wa_common.ids import new_id

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-harness-password"
INTERNAL_TOKEN = "harness-internal-token-" + "x" * 16
API_KEY_SECRET = "harness-api-key-secret-" + "y" * 32

# name -> (module, env prefix, has a store)
SERVICES: dict[str, tuple[str, str, bool]] = {
    "auth": ("wa_auth", "AUTH_", True),
    "stats": ("wa_stats", "STATS_", True),
    "webhooks": ("wa_webhooks", "WEBHOOKS_", True),
    "worker": ("wa_session_worker", "WORKER_", True),
    "gateway": ("wa_gateway", "GATEWAY_", False),
}
# Start order: auth first (the gateway needs its keys), the gateway last.
DEFAULT_SERVICES = ("auth", "stats", "webhooks", "worker", "gateway")
# Never use the ports of a developer's `make run` (8080-8085).
RESERVED_PORTS = frozenset(range(8080, 8086))
START_ATTEMPTS = 3


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (outside 8080-8085), never the same one twice in
    this test run (a port handed out earlier may be about to be bound by the process it was for)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class HarnessError(RuntimeError):
    """A service did not start (its log tail is in the message)."""


class PortTaken(HarnessError):
    """The port picked for a service is answered by another process."""


def _answering_pid(response: httpx.Response) -> int | None:
    """The ``pid`` in a ``/readyz`` body (``wa_common.health``), if any."""
    try:
        body = response.json()
    except ValueError:
        return None
    pid = body.get("pid") if isinstance(body, dict) else None
    return pid if isinstance(pid, int) else None


@dataclass
class ServiceProcess:
    """One running service process."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                cwd=str(ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll ``/readyz`` until 200; raise :class:`HarnessError` if the process exits or times out."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not self.running:
                    raise HarnessError(
                        f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    response = await client.get(f"{self.url}/readyz")
                    pid = _answering_pid(response)
                    if pid is not None and self.proc is not None and pid != self.proc.pid:
                        # Another process owns the port (a race on a port picked free earlier):
                        # this one cannot bind it; stop it so the start is retried elsewhere.
                        self.signal(signal.SIGKILL)
                        raise PortTaken(f"{self.name}: port {self.port} answered by pid {pid}")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"{self.name} not ready within {timeout_s}s ({last}):\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait, 10)


@dataclass
class Cluster:
    """The system's services as processes on one test vhost (see the module docstring)."""

    amqp_url: str
    work_dir: Path
    services: tuple[str, ...] = DEFAULT_SERVICES
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    postgres_url: str = POSTGRES_URL
    # "postgres" (default): a fresh PostgreSQL database per store; "sqlite": a SQLite file per
    # store under ``work_dir`` (the shipped embedded stores; nothing to drop at the end).
    stores: str = "postgres"
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    _prefix: str = field(default_factory=lambda: f"wa_h_{new_id().lower()[-10:]}")

    # --- addresses and credentials ----------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return self.processes["gateway"].url

    def url(self, name: str) -> str:
        return self.processes[name].url

    admin_email: str = ADMIN_EMAIL
    admin_password: str = ADMIN_PASSWORD

    # --- lifecycle ------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        env.update(
            {
                "WA_PROFILE": "embedded",
                "WA_ENGINE": "simulator",
                "AMQP_URL": self.amqp_url,
                # Fewer virtual shards than the default 64: every shard is two quorum queues, and
                # declaring hundreds of them in a fresh vhost makes the first start slow.
                "WA_SHARDS": os.environ.get("HARNESS_SHARDS", "8"),
                "LOG_FORMAT": "json",
                "LOG_LEVEL": os.environ.get("HARNESS_LOG_LEVEL", "INFO"),
                "PYTHONUNBUFFERED": "1",
                "ADMIN_EMAIL": self.admin_email,
                "ADMIN_PASSWORD": self.admin_password,
                "AUTH_INTERNAL_TOKEN": INTERNAL_TOKEN,
                "AUTH_API_KEY_SECRET": API_KEY_SECRET,
                "AUTH_DATA_DIR": str(self.work_dir / "auth-data"),
                "GATEWAY_AUTH_INTERNAL_TOKEN": INTERNAL_TOKEN,
                "GATEWAY_SHUTDOWN_TIMEOUT_S": "5",
                "WORKER_SHUTDOWN_TIMEOUT_S": "5",
                "STATS_SHUTDOWN_TIMEOUT_S": "5",
                "WEBHOOKS_SHUTDOWN_TIMEOUT_S": "5",
                "AUTH_SHUTDOWN_TIMEOUT_S": "5",
            }
        )
        env.update(self.env)
        return env

    def _database_url(self, name: str) -> str:
        base, _, _ = self.postgres_url.rpartition("/")
        return f"{base}/{self._prefix}_{name.replace('-', '_')}"

    async def _create_database(self, name: str) -> str:
        if self.stores == "sqlite":
            return f"sqlite:///{(self.work_dir / f'{name}.db').resolve()}"
        import asyncpg

        db = f"{self._prefix}_{name.replace('-', '_')}"
        conn = await asyncpg.connect(self.postgres_url)
        try:
            await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()
        self.databases.append(db)
        return self._database_url(name)

    def _process(self, name: str, kind: str, extra: dict[str, str] | None = None) -> ServiceProcess:
        module, prefix, _ = SERVICES[kind]
        port = free_port()
        env = self.base_env()
        env[f"{prefix}PORT"] = str(port)
        env[f"{prefix}HOST"] = "127.0.0.1"
        if kind == "gateway" and "auth" in self.processes:
            env["GATEWAY_AUTH_URL"] = self.processes["auth"].url
        env.update(self.service_env.get(kind, {}))
        env.update(self.service_env.get(name, {}))
        env.update(extra or {})
        return ServiceProcess(name, module, port, env, self.work_dir / f"{name}.log")

    async def _migrate(self, proc: ServiceProcess) -> None:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", proc.module, "migrate"],
            env=proc.env,
            cwd=str(ROOT),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise HarnessError(
                f"{proc.name} migrate failed ({result.returncode}):\n{result.stdout.decode()[-2000:]}"
                f"{result.stderr.decode()[-3000:]}"
            )

    async def start(self, timeout_s: float = 90.0) -> Cluster:
        """Create the databases, migrate, start every service and wait until all are ready.

        Migrations run concurrently, then every process starts at once (the gateway tolerates
        auth answering later); a process that exits during start (e.g. a broker handshake timing
        out on a loaded machine) is started again, up to ``START_ATTEMPTS`` times.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        planned: list[tuple[ServiceProcess, bool]] = []
        for kind in self.services:
            _, prefix, has_store = SERVICES[kind]
            if kind == "worker":
                worker_db = await self._create_database("worker")
                for i in range(1, self.workers + 1):
                    extra = {"WORKER_DATABASE_URL": worker_db, "WORKER_ID": f"worker-{i}"}
                    planned.append((self._register(f"worker-{i}", kind, extra), i == 1))
                continue
            extra = {f"{prefix}DATABASE_URL": await self._create_database(kind)} if has_store else {}
            planned.append((self._register(kind, kind, extra), has_store))
        await asyncio.gather(*(self._migrate(proc) for proc, migrate in planned if migrate))
        # The gateway last: it is given auth's address as auth ended up (see ``_run``).
        await asyncio.gather(*(self._run(proc, timeout_s) for proc, _ in planned if proc.name != "gateway"))
        await asyncio.gather(*(self._run(proc, timeout_s) for proc, _ in planned if proc.name == "gateway"))
        return self

    def _register(self, name: str, kind: str, extra: dict[str, str]) -> ServiceProcess:
        proc = self._process(name, kind, extra)
        self.processes[name] = proc
        self.kinds[name] = kind
        return proc

    async def _run(self, proc: ServiceProcess, timeout_s: float) -> None:
        _, prefix, _ = SERVICES[self.kinds[proc.name]]
        for attempt in range(1, START_ATTEMPTS + 1):
            if proc.name == "gateway" and "auth" in self.processes:
                proc.env["GATEWAY_AUTH_URL"] = self.processes["auth"].url
            proc.spawn()
            try:
                await proc.wait_ready(timeout_s)
                return
            except HarnessError as exc:
                if attempt == START_ATTEMPTS or (proc.running and not isinstance(exc, PortTaken)):
                    raise
                # It exited during start (its port may have been taken meanwhile, or the broker
                # handshake timed out) or another process answers its port: again, on a new port.
                await proc.stop()
                proc.port = free_port()
                proc.env[f"{prefix}PORT"] = str(proc.port)

    async def _start_one(
        self, name: str, kind: str, extra: dict[str, str], timeout_s: float, *, migrate: bool
    ) -> ServiceProcess:
        proc = self._register(name, kind, extra)
        if migrate:
            await self._migrate(proc)
        await self._run(proc, timeout_s)
        return proc

    async def add_worker(self, timeout_s: float = 60.0) -> ServiceProcess:
        """Start one more session worker on the same store (``worker-<n+1>``)."""
        n = sum(1 for name in self.processes if name.startswith("worker-")) + 1
        first = self.processes["worker-1"]
        extra = {"WORKER_DATABASE_URL": first.env["WORKER_DATABASE_URL"], "WORKER_ID": f"worker-{n}"}
        return await self._start_one(f"worker-{n}", "worker", extra, timeout_s, migrate=False)

    def kill(self, name: str) -> None:
        """SIGKILL one process (it stays in ``processes``; ``restart`` brings it back)."""
        self.processes[name].signal(signal.SIGKILL)

    async def restart(self, name: str, timeout_s: float = 60.0) -> None:
        proc = self.processes[name]
        await proc.stop()
        proc.spawn()
        await proc.wait_ready(timeout_s)

    async def stop(self) -> None:
        """Stop every process (gateway first, auth last) and drop the databases."""
        for proc in reversed(list(self.processes.values())):
            try:
                await proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"harness: could not stop {proc.name}: {exc}", file=sys.stderr)
        if self.databases:
            import asyncpg

            conn = await asyncpg.connect(self.postgres_url)
            try:
                for db in self.databases:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            finally:
                await conn.close()
            self.databases.clear()

    def log_tail(self, name: str, lines: int = 40) -> str:
        return self.processes[name].log_tail(lines)

    # --- API helpers ------------------------------------------------------------------------

    async def login(self, email: str | None = None, password: str | None = None) -> dict[str, Any]:
        """``POST /api/auth/login`` through the gateway; returns the body ``{token, user}``."""
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as client:
            response = await client.post(
                "/api/auth/login",
                json={"email": email or self.admin_email, "password": password or self.admin_password},
            )
        if response.status_code != 200:
            raise HarnessError(f"login failed: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    async def create_user(self, admin_token: str, *, role: str = "user") -> dict[str, Any]:
        """A new user (``POST /api/users`` as admin); returns the body incl. ``apiKey`` and
        ``password`` (added here)."""
        password = "pw-" + new_id().lower()
        email = f"user-{new_id().lower()}@example.com"
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as client:
            response = await client.post(
                "/api/users",
                headers={"Authorization": f"Bearer {admin_token}"},
                json={
                    "email": email,
                    "password": password,
                    "firstName": "Test",
                    "lastName": "User",
                    "role": role,
                },
            )
        if response.status_code not in (200, 201):
            raise HarnessError(f"create user failed: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        body["password"] = password
        body["email"] = email
        return body
