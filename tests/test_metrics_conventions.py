"""Every service's ``/metrics`` follows the Prometheus conventions of DESIGN.md.

Each service that exists (``wa_auth``, ``wa_gateway``, ``wa_session_worker``, ``wa_webhooks``,
``wa_stats``) is started as its own process (``python -m <package>``; its store first upgraded
with the package's Alembic migrations) with ``WA_PROFILE=embedded``, a free port, its own SQLite
file in a temporary directory and the test vhost, exercised a little (a few HTTP requests, one
event on the bus) and scraped. The exposition is parsed with ``prometheus_client``'s text parser and checked:

- every counter named ``wa_*`` ends in ``_total``; no other ``wa_*`` metric does;
- a metric measuring a duration (``duration``, ``latency``, ``lag``, ``elapsed``, ``age``,
  ``wait_time``, ``time`` in its name) is in seconds: its name ends in ``_seconds``;
  no ``wa_*`` metric is in milliseconds/minutes/bytes-prefixed units (``_ms``, ``_milliseconds``,
  ``_minutes``, ``_kb``, ``_mb``);
- no label names an instance, a user, a URL, a path, a phone or a JID (``instance``,
  ``instance_id``, ``user``, ``user_id``, ``userId``, ``instanceId``, ``url``, ``path``, ``phone``,
  ``jid``...);
- label values are bounded: none looks like a ULID, a UUID, a JID, a phone number or a raw URL
  path with an id, and no label has more than ``MAX_LABEL_VALUES`` distinct values.

A service that does not start (it is being written right now, or is broken) fails its own test
case with its exit status and log tail: it is never skipped silently.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import free_port
from wa_common.bus import Bus
from wa_common.migrations import upgrade
from wa_common.schemas import Event, EventType

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
MAX_LABEL_VALUES = 60
_MIGRATE_LOCK = threading.Lock()

FORBIDDEN_LABELS = {
    "instance",
    "instanceid",
    "user",
    "userid",
    "url",
    "uri",
    "path",
    "rawpath",
    "phone",
    "phonenumber",
    "jid",
    "email",
    "apikey",
    "messageid",
    "eventid",
    "chatid",
}
DURATION_WORDS = re.compile(r"(duration|latency|_lag(_|$)|elapsed|_age(_|$)|wait_time|_time(_|$))")
SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]")
BAD_UNITS = re.compile(r"_(ms|milliseconds|microseconds|minutes|hours|kb|mb|gb|kilobytes|megabytes)($|_)")
UNBOUNDED_VALUES = [
    ("ULID", re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", re.IGNORECASE)),
    ("UUID", re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)),
    ("JID", re.compile(r"@(s\.whatsapp\.net|g\.us|c\.us|lid)\b")),
    ("phone number", re.compile(r"^\+?\d{9,15}$")),
    ("e-mail address", re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)),
    ("raw path with an id", re.compile(r"^/.*/[0-9A-Za-z_-]{20,}")),
]


@dataclass(frozen=True)
class ServiceSpec:
    module: str
    prefix: str
    has_store: bool


SERVICES: dict[str, ServiceSpec] = {
    "auth": ServiceSpec("wa_auth", "AUTH_", True),
    "gateway": ServiceSpec("wa_gateway", "GATEWAY_", False),
    "session-worker": ServiceSpec("wa_session_worker", "WORKER_", True),
    "webhooks": ServiceSpec("wa_webhooks", "WEBHOOKS_", True),
    "stats": ServiceSpec("wa_stats", "STATS_", True),
}


# --- the checker (pure) --------------------------------------------------------------------


def _norm(label: str) -> str:
    return label.replace("_", "").replace("-", "").lower()


def violations(exposition: str) -> list[str]:
    """Every breach of the conventions in a text exposition (empty = compliant)."""
    problems: list[str] = []
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    raw_names = {
        match.group(1) for line in exposition.splitlines() if (match := SAMPLE_NAME.match(line)) is not None
    }
    families = list(text_string_to_metric_families(exposition))
    for family in families:
        name, kind = family.name, family.type
        if name.endswith("_created") and kind == "gauge":
            continue  # creation timestamps prometheus_client adds to counters and histograms
        ours = name.startswith("wa_")
        if ours:
            if kind == "counter":
                # The parser names a counter family without "_total" and adds the suffix to its
                # samples, so a missing "_total" shows only in the raw sample lines.
                if name in raw_names:
                    problems.append(f"counter {name} does not end in _total")
            elif name.endswith("_total"):
                problems.append(f"{kind} {name} ends in _total but is not a counter")
            if BAD_UNITS.search(name):
                problems.append(f"{name} is not in base units (seconds, bytes)")
            # Counter family names come without "_total", so "_seconds" is their unit suffix too.
            if DURATION_WORDS.search(name) and kind != "info" and not name.endswith("_seconds"):
                problems.append(f"{kind} {name} measures a duration but does not end in _seconds")
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label in ("le", "quantile"):
                    continue
                if _norm(label) in FORBIDDEN_LABELS:
                    problems.append(f"{name} has a forbidden label {label!r} (unbounded identity)")
                for what, pattern in UNBOUNDED_VALUES:
                    if pattern.search(value):
                        problems.append(f"{name}{{{label}={value!r}}}: value looks like a {what}")
                        break
                values[(name, label)].add(value)
    for (name, label), seen in values.items():
        if len(seen) > MAX_LABEL_VALUES:
            problems.append(f"{name} label {label!r} has {len(seen)} distinct values (unbounded?)")
    return sorted(set(problems))


def test_checker_finds_breaches() -> None:
    """The checker itself: a compliant exposition passes, each kind of breach is reported."""
    good = (
        "# TYPE wa_x_requests_total counter\n"
        'wa_x_requests_total{route="/api/instances/{instance_id}",status="200"} 1\n'
        "# TYPE wa_x_request_duration_seconds histogram\n"
        'wa_x_request_duration_seconds_bucket{le="+Inf"} 1\n'
        "wa_x_request_duration_seconds_sum 0.1\n"
        "wa_x_request_duration_seconds_count 1\n"
    )
    assert violations(good) == []
    bad = (
        "# TYPE wa_sent counter\n"
        "wa_sent 1\n"
        "# TYPE wa_handler_duration_ms histogram\n"
        'wa_handler_duration_ms_bucket{le="+Inf"} 1\n'
        "wa_handler_duration_ms_sum 1\nwa_handler_duration_ms_count 1\n"
        "# TYPE wa_events_total counter\n"
        'wa_events_total{instance_id="01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"} 1\n'
        'wa_events_total{userId="u1"} 1\n'
        "# TYPE wa_queue_depth gauge\n"
        'wa_queue_depth{queue="wa.live.01JD3Z8M4W8Q2J7ZQ7S9W6X2KB"} 1\n'
        'wa_queue_depth{queue="79001234567@s.whatsapp.net"} 1\n'
    )
    found = "\n".join(violations(bad))
    for expected in (
        "wa_sent",  # counter without _total
        "wa_handler_duration_ms is not in base units",
        "forbidden label 'instance_id'",
        "forbidden label 'userId'",
        "looks like a ULID",
        "looks like a JID",
    ):
        assert expected in found, f"{expected!r} not reported in:\n{found}"


# --- the services as processes -------------------------------------------------------------


@dataclass
class Started:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def _env(name: str, spec: ServiceSpec, amqp_url: str, work: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env.update(
        {
            "WA_PROFILE": "embedded",
            "WA_ENGINE": "simulator",
            "AMQP_URL": amqp_url,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            f"{spec.prefix}PORT": str(port),
            f"{spec.prefix}HOST": "127.0.0.1",
            f"{spec.prefix}SHUTDOWN_TIMEOUT_S": "5",
            "AUTH_DATA_DIR": str(work / "auth-data"),
            "WORKER_ID": "metrics-test-worker",
        }
    )
    if spec.has_store:
        env[f"{spec.prefix}DATABASE_URL"] = f"sqlite:///{work}/{name}.db"
    return env


class StartFailure(Exception):
    """A service could not be started; the message says why and shows its output."""

    def __init__(self, name: str, what: str, log: Path) -> None:
        super().__init__(
            f"service {name!r} {what}; it cannot be checked against the metrics conventions.\n"
            f"--- last lines of its output ({log}) ---\n{_tail(log)}"
        )


def _start(name: str, amqp_url: str, work: Path) -> Started:
    """Migrate (if it has a store), spawn, and wait until ``/metrics`` answers 200 (``/readyz``
    may depend on other services). Raises :class:`StartFailure`."""
    spec = SERVICES[name]
    port = free_port()
    env = _env(name, spec, amqp_url, work, port)
    log = work / f"{name}.log"
    if spec.has_store:
        # In this process (saves a Python start per service on a busy machine); the same
        # Alembic upgrade `python -m <package> migrate` runs.
        try:
            with _MIGRATE_LOCK:  # Alembic's context is global: one upgrade at a time
                upgrade(spec.module, env[f"{spec.prefix}DATABASE_URL"])
        except Exception as exc:
            log.write_text(f"{type(exc).__name__}: {exc}\n")
            raise StartFailure(name, f"failed its migrations ({type(exc).__name__}: {exc})", log) from exc
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", spec.module],
            env=env,
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Started(name, f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer"
    try:
        with httpx.Client(timeout=2.0) as http:
            while True:
                if proc.poll() is not None:
                    raise StartFailure(name, f"exited with status {proc.returncode} while starting", log)
                try:
                    response = http.get(f"{started.url}/metrics")
                    if response.status_code == 200:
                        return started
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise StartFailure(
                        name, f"did not serve /metrics within {START_TIMEOUT_S:.0f}s ({last})", log
                    )
                time.sleep(0.1)
    except BaseException:
        _stop(proc)
        raise


@pytest.fixture(scope="module")
def services(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started | str]]:
    """Every service started at once (in threads); name → running process or failure message."""
    work = tmp_path_factory.mktemp("metrics-conventions")
    outcome: dict[str, Started | str] = {}
    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        futures = {name: pool.submit(_start, name, amqp_url, work) for name in SERVICES}
        for name, future in futures.items():
            try:
                outcome[name] = future.result()
            except StartFailure as exc:
                outcome[name] = str(exc)
            except Exception as exc:
                outcome[name] = f"service {name!r} could not be started: {type(exc).__name__}: {exc}"
    try:
        yield outcome
    finally:
        for started in outcome.values():
            if isinstance(started, Started):
                _stop(started.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def _exercise(started: Started, amqp_url: str) -> None:
    """A little traffic so that labelled metrics have samples: HTTP requests and one event."""
    async with httpx.AsyncClient(base_url=started.url, timeout=5.0) as http:
        for path in ("/healthz", "/readyz", "/metrics", "/no-such-route-01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"):
            await http.get(path)
    bus = Bus(amqp_url, service="metrics-conventions-test")
    await bus.connect(declare=False)
    try:
        await bus.publish_event(
            Event(
                type=EventType.CONNECTED,
                instance_id="01JD3Z8M4W8Q2J7ZQ7S9W6X2KA",
                user_id="metrics-test-user",
                data={"instanceId": "01JD3Z8M4W8Q2J7ZQ7S9W6X2KA"},
            )
        )
    finally:
        await bus.close(timeout_s=2)


@pytest.mark.parametrize("name", list(SERVICES))
async def test_metrics_follow_conventions(
    name: str, services: dict[str, Started | str], amqp_url: str
) -> None:
    service = services[name]
    if isinstance(service, str):
        pytest.fail(service, pytrace=False)
    await _exercise(service, amqp_url)
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(f"{service.url}/metrics")
    assert response.status_code == 200, f"{service.name}: /metrics answered {response.status_code}"
    text = response.text
    families = list(text_string_to_metric_families(text))
    assert any(f.name.startswith("wa_") for f in families), f"{service.name} exposes no wa_* metric"
    problems = violations(text)
    assert not problems, f"{service.name} breaks the metrics conventions:\n  " + "\n  ".join(problems)
