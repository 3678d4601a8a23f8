"""``GET /api/events/stream`` (server-sent events) through the running system: a user's stream
carries their instance's QR, connection and message events as they happen; another user's
stream does not; filters and errors answer as documented in ``wa_gateway.api.live``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import rabbitmqctl, wait_for
from tests.e2e import steps
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e]


@dataclass
class StreamReader:
    """Reads an event stream in the background into ``frames`` (``{"event", "id", "data"}``)."""

    status: int | None = None
    content_type: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)
    comments: int = 0

    async def run(self, api: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]) -> None:
        async with api.stream(
            "GET", "/api/events/stream", headers=headers, params=params, timeout=None
        ) as response:
            self.status = response.status_code
            self.content_type = response.headers.get("content-type", "")
            if response.status_code != 200:
                return
            frame: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event: "):
                    frame["event"] = line[7:]
                elif line.startswith("id: "):
                    frame["id"] = line[4:]
                elif line.startswith("data: "):
                    frame["data"] = json.loads(line[6:])
                elif line == "" and frame:
                    self.frames.append(frame)
                    frame = {}

    def of(self, event: str, instance_id: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("event") == event and (instance_id is None or f["data"].get("instanceId") == instance_id)
        ]


@contextlib.asynccontextmanager
async def reading(
    api: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> AsyncIterator[StreamReader]:
    reader = StreamReader()
    task = asyncio.create_task(reader.run(api, headers, params))
    try:
        await wait_for(lambda: reader.frames or task.done(), timeout_s=15, message="stream opened")
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_stream_carries_the_callers_events_and_only_theirs(system: System) -> None:
    api, admin = system.api, system.admin
    owner = await steps.user_headers(api, admin)
    other = await steps.user_headers(api, admin)

    async with reading(api, owner) as mine, reading(api, other) as theirs:
        assert mine.status == 200 and mine.content_type.startswith("text/event-stream")
        assert mine.frames[0]["event"] == "ready"
        created = await steps.create_instance(api, owner, "live-stream", None, None)
        iid = created["instanceId"] if "instanceId" in created else created["id"]

        await wait_for(lambda: mine.of("qr_received", iid), timeout_s=30, message="qr_received streamed")
        qr = mine.of("qr_received", iid)[0]
        assert qr["data"]["type"] == "qr_received" and qr["data"]["data"]["qrCode"]
        assert qr["id"] == qr["data"]["id"] and qr["data"]["timestamp"].endswith("Z")
        # When the code stops working: after it was issued (the simulator: 60 s for the first).
        assert qr["data"]["expiresAt"].endswith("Z") and qr["data"]["expiresAt"] > qr["data"]["timestamp"]
        assert "expiresAt" not in qr["data"]["data"], "the webhook payload stays the reference's"

        phone = steps.new_phone()
        await steps.scan(api, admin, iid, phone)
        await wait_for(lambda: mine.of("connected", iid), timeout_s=30, message="connected streamed")

        contact = steps.new_phone()
        message_id = await steps.send_text(api, owner, iid, contact, "hello over the stream")
        await wait_for(
            lambda: [f for f in mine.of("message_sent", iid) if f["data"]["data"]["messageId"] == message_id],
            timeout_s=30,
            message="message_sent streamed",
        )
        # instance.created reaches the owner without its webhook settings (secrets stay inside).
        await wait_for(lambda: mine.of("instance.created", iid), timeout_s=30, message="instance.created")
        assert set(mine.of("instance.created", iid)[0]["data"]["data"]) <= {"instanceId", "name"}

    # The other user's stream was open the whole time and saw none of it.
    assert theirs.status == 200
    assert not [f for f in theirs.frames if f["event"] != "ready"], theirs.frames


async def test_stream_filters_and_refusals(system: System) -> None:
    api, admin = system.api, system.admin
    owner = await steps.user_headers(api, admin)
    other = await steps.user_headers(api, admin)
    first = await steps.create_instance(api, owner, "live-a", None, None)
    second = await steps.create_instance(api, owner, "live-b", None, None)
    a = str(first.get("instanceId", first.get("id")))
    b = str(second.get("instanceId", second.get("id")))

    # No credentials: 401 in the API's error shape; all=true for a user: 403.
    unauthenticated = await api.get("/api/events/stream")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]
    forbidden = await api.get("/api/events/stream", headers=owner, params={"all": "true"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]
    # Someone else's instance, or no such instance: 404 (not 403: existence is not disclosed).
    foreign = await api.get("/api/events/stream", headers=other, params={"instanceId": a})
    assert foreign.status_code == 404, foreign.text

    # instanceId narrows the stream to one instance.
    async with reading(api, owner, instanceId=a) as only_a:
        await api.post(f"/api/instances/{b}/reconnect", headers=owner)
        await api.post(f"/api/instances/{a}/reconnect", headers=owner)
        await wait_for(lambda: only_a.of("qr_received", a), timeout_s=30, message="a's QR streamed")
    assert not [f for f in only_a.frames if f["event"] != "ready" and f["data"]["instanceId"] != a]

    # An admin's all=true stream sees other users' events.
    async with reading(api, admin, all="true") as everything:
        await api.post(f"/api/instances/{b}/reconnect", headers=owner)
        await wait_for(lambda: everything.of("qr_received", b), timeout_s=30, message="admin sees b")


async def test_open_streams_do_not_hold_a_gateway_shutdown(system: System) -> None:
    """SIGTERM ends open streams at once (``Runtime.on_exit_requested``): the gateway exits well
    within its graceful-shutdown timeout (``SHUTDOWN_TIMEOUT_S``, 30 s by default) instead of
    waiting for the browsers to hang up."""
    gateway = system.cluster.processes["gateway"]
    assert gateway.proc is not None
    try:
        async with reading(system.api, system.admin) as stream:
            assert stream.status == 200
            gateway.signal(signal.SIGTERM)
            await wait_for(
                lambda: gateway.proc is not None and gateway.proc.poll() is not None,
                timeout_s=10,
                message="gateway exited with a stream open",
            )
        # uvicorn re-raises the signal after a complete graceful shutdown (exit status -15).
        assert gateway.proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in gateway.log_tail(20)
    finally:
        await system.cluster.restart("gateway")


async def test_reopened_streams_get_each_event_once(system: System) -> None:
    """The gateway stops its broker consumer after the last client left (``GATEWAY_STREAM_LINGER_S``,
    0.2 s here) and starts one consumer again for the next client: every event arrives once."""
    api, admin = system.api, system.admin
    owner = await steps.user_headers(api, admin)
    created = await steps.create_instance(api, owner, "live-reopen", None, None)
    iid = created.get("instanceId", created.get("id"))
    vhost = system.amqp_url.rsplit("/", 1)[1]

    def live_queues() -> list[str]:
        listed = rabbitmqctl("-q", "-s", "list_queues", "-p", vhost, "name")
        return [q for q in listed.split() if q.startswith("wa.live.gateway-stream.")]

    for _ in range(3):
        async with reading(api, owner) as stream:
            assert stream.status == 200
        await wait_for(lambda: not live_queues(), timeout_s=30, message="live consumer stopped")

    async with reading(api, owner) as stream:
        assert len(live_queues()) == 1
        for n in (1, 2):  # one at a time: a reconnect during a reconnect may not make a new QR
            await api.post(f"/api/instances/{iid}/reconnect", headers=owner)
            await wait_for(
                lambda n=n: len(stream.of("qr_received", iid)) >= n, timeout_s=30, message=f"QR event {n}"
            )
    ids = [f["id"] for f in stream.frames if "id" in f]
    assert len(ids) == len(set(ids)), f"duplicated events: {ids}"
