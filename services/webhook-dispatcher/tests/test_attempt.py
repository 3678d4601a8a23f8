"""The attempt runner (``wa_webhooks.attempt``): whatever goes wrong inside an attempt is a
failed attempt (real bus, PostgreSQL, loopback receivers): it is logged in the attempt log with an
error text that carries no secret, and the delivery follows its retry schedule to ``failed`` —
never retried forever.

Custom headers HTTP cannot carry are written into the dispatcher's stored settings replica
directly, as instances created before the gateway refused them would have them, and loaded into
its in-memory replica as at a start.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from conftest import wait_for
from tests.support.dispatcher import Stack, make_settings, start_stack, stop_stack
from wa_common.bus import EXCHANGE_EVENTS
from wa_common.schemas import Event
from wa_webhooks.models import Endpoint

pytestmark = pytest.mark.integration

SECRET = "whsec-top-secret-value"
TOKEN = "Bearer tok-3f9a-very-secret"


async def resolver(host: str, port: int) -> Sequence[str]:
    """DNS for the guard: ``boom.test`` makes the resolver itself fail with an exception nobody
    expects (quoting a secret, as a careless library might); other names are loopback."""
    if host == "boom.test":
        raise RuntimeError(f"resolver exploded while holding {TOKEN}")
    return ["127.0.0.1"]


@pytest.fixture(scope="module")
async def boom_stack(amqp_url: str, postgres_url: str) -> AsyncIterator[Stack]:
    runtime, s = await start_stack(make_settings(amqp_url, postgres_url), resolver=resolver)
    yield s
    await stop_stack(runtime, s)


async def set_replica_headers(stack: Stack, instance_id: str, headers: dict[str, str]) -> None:
    async with stack.dispatcher.repo.sessions.begin() as session:
        await session.execute(
            update(Endpoint).where(Endpoint.instance_id == instance_id).values(headers=headers)
        )
    await stack.dispatcher.replica.load()  # what a process holds after a restart


async def finished(stack: Stack, instance_id: str) -> Any:
    rows, attempts, _ = await stack.dispatcher.repo.deliveries.page(instance_id, status=None, limit=5, skip=0)
    if rows and rows[0].status != "pending":
        return rows[0], attempts[rows[0].id]
    return None


def leaked(entries: Sequence[Any], secrets: list[str]) -> list[str]:
    text = json.dumps(entries, default=repr, ensure_ascii=False)
    return [s for s in secrets if s in text or json.dumps(s)[1:-1] in text]


async def test_a_header_http_cannot_carry_fails_each_attempt_until_failed(
    boom_stack: Stack, http_servers: Callable[..., Any]
) -> None:
    stack = boom_stack
    r = await http_servers()
    outcomes: list[Event] = []

    async def collect(delivery: Any) -> None:
        outcomes.append(Event.from_bytes(delivery.body))

    watcher = await stack.bus.consume_transient(
        [(EXCHANGE_EVENTS, "webhook.#")], collect, name_prefix="wa.test"
    )
    cases = {
        "non-ASCII": {"Authorization": TOKEN, "X-Client": "Café-très-secret"},
        "CR/LF": {"X-Injected": f"{TOKEN}\r\nX-Evil: 1"},
        "NUL": {"Authorization": f"{TOKEN}\x00"},
        "token name": {"Bad Name": "v", "X-Ok": "1"},
    }
    ids = {}
    with capture_logs() as logs:
        for case, headers in cases.items():
            iid = await stack.create_instance(r.url(), secret=SECRET, max_retries=2, retry_interval=1000)
            await set_replica_headers(stack, iid, headers)
            await stack.publish("connected", iid, {"instanceId": iid})
            ids[case] = iid
        done = {}
        for case, iid in ids.items():
            done[case] = await wait_for(
                lambda iid=iid: finished(stack, iid), timeout_s=20, message=f"{case} delivery finished"
            )
    assert r.requests == []  # nothing was sent with a broken or missing header
    for case, (delivery, attempts) in done.items():
        assert delivery.status == "failed", case
        assert [a.number for a in attempts] == [1, 2, 3], case
        assert all(a.outcome == "error" and a.status_code is None for a in attempts), case
        assert all(a.error and "custom header" in a.error for a in attempts), (case, attempts[0].error)
    assert "'X-Client'" in done["non-ASCII"][1][0].error
    assert "'Bad Name'" in done["token name"][1][0].error
    # The deliveries API shows the same texts, and nothing secret in them.
    reply = await stack.call("webhooks.deliveries.list", ids["non-ASCII"])
    shown = reply.data["deliveries"][0]
    assert shown["status"] == "failed" and shown["attemptCount"] == 3
    assert shown["lastError"] == shown["attempts"][-1]["error"] and "X-Client" in shown["lastError"]
    secrets = [SECRET, TOKEN, "très-secret", "tok-3f9a"]
    assert leaked([dict(d.__dict__) for d, _ in done.values()], secrets) == []
    assert leaked([a.__dict__ for _, attempts in done.values() for a in attempts], secrets) == []
    assert leaked([reply.data], secrets) == []
    assert leaked(logs, secrets) == []
    assert [e for e in logs if e["event"] == "webhook attempt"], "attempts are logged"
    await wait_for(lambda: len(outcomes) >= len(ids), message="webhook.failed events")
    assert {(e.type, e.instance_id, e.data["attempts"]) for e in outcomes} >= {
        ("webhook.failed", iid, 3) for iid in ids.values()
    }
    await watcher.cancel()


async def test_any_exception_in_an_attempt_is_a_failed_attempt(boom_stack: Stack) -> None:
    """The resolver raises an exception no handler names: before, the attempt was never logged
    and the delivery came back every lease, forever."""
    stack = boom_stack
    iid = await stack.create_instance(
        "http://boom.test:8080/hook",
        secret=SECRET,
        max_retries=1,
        retry_interval=1000,
        headers={"Authorization": TOKEN},
    )
    with capture_logs() as logs:
        await stack.publish("connected", iid, {"instanceId": iid})
        delivery, attempts = await wait_for(lambda: finished(stack, iid), timeout_s=20, message="finished")
    assert delivery.status == "failed"
    assert [(a.number, a.outcome, a.error) for a in attempts] == [
        (1, "error", "the request could not be made (RuntimeError)"),
        (2, "error", "the request could not be made (RuntimeError)"),
    ]
    unexpected = [e for e in logs if e["event"] == "webhook attempt failed unexpectedly"]
    assert len(unexpected) == 2 and "[redacted]" in unexpected[0]["detail"]
    assert leaked(logs, [TOKEN, SECRET]) == []
