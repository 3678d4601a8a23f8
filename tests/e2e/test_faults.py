"""End-to-end scenario 6 (issue 9): faults during a stream of sends, on a cluster of its own.

Two instances (one per session worker) send a steady stream to an external simulated contact,
as a careful client does: each send carries an ``Idempotency-Key`` and is retried with the same
key until it is accepted (2xx with an id). A 409 "an earlier attempt of this send was interrupted
(worker failover)" is handled as that error says: the client looks for the text in the chat
history and sends again with a new key only if it is not there (the worker never sends twice
on its own). Meanwhile a session worker, the webhook dispatcher,
stats and the gateway are killed with SIGKILL in turn; the other worker takes the dead one's
instances over, the others are restarted. At the end:

* every accepted send is in history exactly once (and nothing is in history twice);
* every event the instances produced (``/events``: ``message_sent``, ``message_status``) arrived
  as a webhook — exactly once after deduplication by ``X-Webhook-Id``, signature verified;
* stats count what history holds.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import VhostFactory, wait_for
from tests.e2e import steps
from tests.e2e.conftest import System, run_system
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.e2e

CONTACT = "79005550001"
FAULT_ENV = {
    # A dead worker's shards move within ~5 s; the dispatcher's claims expire after 14 s.
    "WORKER_LEASE_TTL_S": "4",
    "WORKER_LEASE_RENEW_S": "1",
    "WORKER_LEASE_SAFETY_S": "2",
    "GATEWAY_RPC_TIMEOUT_S": "5",
    "WEBHOOKS_ATTEMPT_TIMEOUT_S": "2",
    "WEBHOOKS_LEASE_S": "14",
    "STATS_MAINTENANCE_INTERVAL_S": "2",
}


@pytest.fixture(scope="module")
async def faulty(
    vhost_factory: VhostFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    work_dir = tmp_path_factory.mktemp("e2e-faults")
    async with run_system(vhost_factory, work_dir, workers=2, env=FAULT_ENV, api_timeout_s=15) as system:
        yield system


@dataclass
class Stream:
    """Senders that retry each send with its Idempotency-Key until it is accepted."""

    gateway_url: str
    headers: dict[str, str]
    instances: list[str]
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (instance id, message id)
    # Sends whose attempt a worker failover interrupted (409): found in history, or sent again.
    interrupted: list[tuple[str, str, bool]] = field(default_factory=list)  # (iid, text, found)
    failures: Counter[str] = field(default_factory=Counter)
    last_error: dict[str, str] = field(default_factory=dict)
    running: bool = True

    async def sender(self, iid: str) -> None:
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=15) as api:
            n = 0
            while self.running:
                n += 1
                text = f"stream {iid[-6:]} {n}"
                key = f"fault-{iid}-{n}-{secrets.token_hex(4)}"
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    try:
                        response = await api.post(
                            f"/api/whatsapp/{iid}/send",
                            headers={**self.headers, "Idempotency-Key": key},
                            json={"phone": CONTACT, "message": text},
                        )
                    except httpx.HTTPError as exc:
                        self.failures[type(exc).__name__] += 1
                        await asyncio.sleep(0.2)  # back-off of a retrying client, not synchronisation
                        continue
                    if response.status_code == 200 and response.json().get("id"):
                        self.accepted.append((iid, response.json()["id"]))
                        # A steady stream (a few sends/s per instance) keeps /events under its
                        # 1000-event page; pacing, not synchronisation.
                        await asyncio.sleep(0.2)
                        break
                    self.failures[str(response.status_code)] += 1
                    self.last_error[str(response.status_code)] = response.text[:300]
                    if response.status_code == 409 and "interrupted" in response.text:
                        # As the error says: look in the history; if it is not there, send again
                        # with a new key.
                        found = await self._in_history(api, iid, text)
                        self.interrupted.append((iid, text, found))
                        if found:
                            break
                        key = f"fault-{iid}-{n}-{secrets.token_hex(4)}"
                        continue
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"send {key} never accepted: {self.last_error}")

    async def _in_history(self, api: httpx.AsyncClient, iid: str, text: str) -> bool:
        while True:
            try:
                messages = await steps.history(api, self.headers, iid, steps.jid(CONTACT))
                return any(m["content"] == text for m in messages)
            except (httpx.HTTPError, AssertionError):
                await asyncio.sleep(0.2)

    async def more(self, count: int, what: str, timeout_s: float = 60) -> None:
        """Wait until ``count`` more sends are accepted (the system works again after a fault)."""
        target = len(self.accepted) + count
        await wait_for(
            lambda: len(self.accepted) >= target, timeout_s=timeout_s, interval_s=0.1, message=what
        )


@pytest.mark.timeout(480)
async def test_6_faults_during_a_stream_of_sends(faulty: System) -> None:
    system, cluster, api = faulty, faulty.cluster, faulty.api
    receiver = await WebhookReceiver().start()
    try:
        headers = await steps.user_headers(api, system.admin)
        secret = "fault-secret"
        # One instance on each worker.
        by_worker: dict[str, str] = {}
        spare: list[str] = []
        paths: dict[str, str] = {}
        while len(by_worker) < 2:
            path = "f-" + secrets.token_hex(4)
            created = await steps.create_instance(api, headers, "fault", receiver.url(path, secret), secret)
            paths[created["id"]] = path
            worker = await steps.worker_of(system.api, system.admin, created["id"])
            if worker in by_worker:
                spare.append(created["id"])
            else:
                by_worker[worker] = created["id"]
            assert len(spare) < 20
        for iid in spare:
            await api.delete(f"/api/instances/{iid}", headers=headers)
        instances = list(by_worker.values())
        await asyncio.gather(
            *(steps.link(api, system.admin, headers, iid, steps.new_phone()) for iid in instances)
        )
        stream = Stream(cluster.gateway_url, headers, instances)
        senders = [asyncio.create_task(stream.sender(iid)) for iid in instances]
        try:
            await _faults(system, headers, stream)
        except BaseException:
            stream.running = False
            await asyncio.gather(*senders, return_exceptions=True)
            raise
        stream.running = False
        await asyncio.gather(*senders)
        await _check_everything_once(system, headers, receiver, stream, paths)
    finally:
        await receiver.stop()


async def _faults(system: System, headers: dict[str, str], stream: Stream) -> None:
    cluster, api = system.cluster, system.api
    await stream.more(6, "sends before the faults")
    # 1. A session worker dies; the other one takes its instances over.
    cluster.kill("worker-1")
    await stream.more(10, "sends after worker-1 was killed", timeout_s=90)
    for iid in stream.instances:
        await steps.wait_status(api, headers, iid, "connected", timeout_s=60)
    # 2-4. The dispatcher, stats and the gateway die and come back.
    for name in ("webhooks", "stats", "gateway"):
        cluster.kill(name)
        if name != "gateway":
            await stream.more(4, f"sends while {name} is down")
        await cluster.restart(name, timeout_s=90)
        await stream.more(4, f"sends after {name} restarted")


def _key(event: str, data: dict[str, Any]) -> tuple[str, str, str | None]:
    """An event's identity across /events and webhooks: type, message id, receipt status."""
    return event, str(data.get("messageId")), data.get("status") if event == "message_status" else None


async def _check_everything_once(
    system: System, headers: dict[str, str], receiver: WebhookReceiver, stream: Stream, paths: dict[str, str]
) -> None:
    api = system.api
    accepted: dict[str, list[str]] = {iid: [] for iid in stream.instances}
    for iid, message_id in stream.accepted:
        accepted[iid].append(message_id)
    # Idempotent retries returned the first result: no id accepted twice.
    for iid, ids in accepted.items():
        assert len(ids) == len(set(ids)), f"{iid}: an id accepted twice"

    for iid, ids in accepted.items():
        messages = await steps.history(api, headers, iid, steps.jid(CONTACT))
        in_history = Counter(m["messageId"] for m in messages if m["fromMe"])
        assert all(count == 1 for count in in_history.values()), "a message is in history twice"
        missing = set(ids) - set(in_history)
        assert not missing, f"{len(missing)} accepted sends not in history"

        # Every event produced arrived as a webhook, once per X-Webhook-Id.
        produced = [
            *await steps.events(api, headers, iid, "message_sent"),
            *await steps.events(api, headers, iid, "message_status"),
        ]
        want = Counter(_key(e["type"], e["data"]) for e in produced)
        assert set(ids) <= {key[1] for key in want if key[0] == "message_sent"}

        def delivered(iid: str = iid, want: Counter[tuple[str, str, Any]] = want) -> bool:
            hooks = receiver.unique(paths[iid])
            got = Counter(_key(h.event, h.data) for h in hooks if h.data.get("messageId"))
            return all(got[key] >= n for key, n in want.items())

        try:
            await receiver.wait(delivered, timeout_s=90, message=f"webhooks of {iid}'s events")
        except AssertionError:
            arrived = receiver.unique(paths[iid])
            seen = Counter(_key(h.event, h.data) for h in arrived)
            absent = [(key, n - seen[key]) for key, n in want.items() if seen[key] < n]
            deliveries = await api.get(
                f"/api/instances/{iid}/webhooks/deliveries", headers=headers, params={"limit": 1000}
            )
            missing_ids = {key[1] for key, _ in absent}
            related = [
                d
                for d in deliveries.json().get("deliveries", [])
                if str(d) and any(i in str(d) for i in missing_ids)
            ]
            raise AssertionError(
                f"{len(absent)} events without a webhook: {absent[:10]}; deliveries: {related[:10]}; "
                f"{len(want)} events, {len(arrived)} hooks"
            ) from None
        hooks = [h for h in receiver.unique(paths[iid]) if h.event in ("message_sent", "message_status")]
        assert all(h.verified for h in hooks)
        got = Counter(_key(h.event, h.data) for h in hooks)
        assert got == want, f"webhooks differ from events: {(got - want) + (want - got)}"

        # Stats count what history holds.
        async def stats_match(iid: str = iid, sent: int = sum(in_history.values())) -> bool:
            return (await steps.instance_stats(api, headers, iid))["messagesSent"] == sent

        await wait_for(stats_match, timeout_s=60, interval_s=0.5, message=f"stats of {iid} = history")
    print(
        f"faults: {len(stream.accepted)} sends accepted; retried answers: {dict(stream.failures)}; "
        f"interrupted by the failover: {stream.interrupted}"
    )
