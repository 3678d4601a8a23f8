"""The worker's transactional outbox against the real RabbitMQ: an event whose state change was
committed but which the broker never confirmed (the worker died, or the broker was gone) is
published by the relay of the shard's owner, with its original id, and then forgotten; events
published on their normal path leave nothing behind."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from wa_common.bus import (
    EXCHANGE_COMMANDS,
    EXCHANGE_EVENTS,
    QUERY_ROUTING_KEY,
    Bus,
    Delivery,
    RpcClient,
    shard_for,
    shard_queue,
)
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Command, Event, EventType, Query
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand, SessionQuery
from wa_common.sim_client import sim_scan, sim_send
from wa_session_worker.main import Worker, build_app
from wa_session_worker.repository.base import Repository
from wa_session_worker.service import outbox
from wa_session_worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

S = 4


@dataclass
class World:
    worker: Worker
    repo: Repository
    bus: Bus  # the test's own connection
    events: list[Event]
    amqp_url: str

    def received(self, event_id: str) -> list[Event]:
        return [e for e in self.events if e.id == event_id]

    async def pending_ids(self) -> list[str]:
        due = await self.repo.outbox_due(list(range(S)), utcnow() + timedelta(hours=1), 1000)
        return [e.id for e in due]


@pytest.fixture(scope="module")
async def world(
    amqp_url: str, tmp_path_factory: pytest.TempPathFactory, worker_settings: Callable[..., WorkerSettings]
) -> AsyncIterator[World]:
    path: Path = tmp_path_factory.mktemp("outbox") / "worker.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(upgrade, "wa_session_worker", url)
    settings = worker_settings(
        "outbox-worker", amqp_url, url, S, outbox_relay_interval_s=0.2, outbox_grace_s=0.5
    )
    app = build_app(settings)
    events: list[Event] = []
    async with app.state.runtime.lifespan(app):
        bus = Bus(amqp_url, service="outbox-test", shard_count=S)
        await bus.connect()

        async def on_event(delivery: Delivery) -> None:
            events.append(Event.from_bytes(delivery.body))

        await bus.consume_transient([(EXCHANGE_EVENTS, "#")], on_event, name_prefix="wa.test.outbox")
        await wait_for(lambda: len(app.state.shards.owned()) == S, timeout_s=20, message="all shards owned")
        worker: Worker = app.state.worker
        yield World(worker, worker.repo, bus, events, amqp_url)
        await bus.close()


async def paired_instance(bus: Bus) -> tuple[str, str]:
    """A new instance of alice's, linked by a simulated phone; returns (instance id, phone)."""
    rpc = RpcClient(bus)
    await rpc.start()
    alice, iid, phone = Caller(user_id="alice"), new_id(), f"1555{secrets.randbelow(10**7):07d}"
    create = Command(
        name=SessionCommand.CREATE_INSTANCE, caller=alice, instance_id=iid, payload={"name": "o"}
    )
    assert (await rpc.call(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, S)), create)).status == 201

    async def ask(name: str) -> dict[str, object] | None:
        reply = await rpc.call(
            EXCHANGE_COMMANDS, QUERY_ROUTING_KEY, Query(name=name, caller=alice, instance_id=iid)
        )
        return reply.data if reply.status == 200 else None

    qr = await wait_for(lambda: ask(SessionQuery.QR), timeout_s=10, message="QR")
    await sim_scan(bus, str(qr["qrCode"]), phone)

    async def connected() -> bool:
        status = await ask(SessionQuery.STATUS)
        return bool(status and status["status"] == "connected")

    await wait_for(connected, timeout_s=10, message="connected")
    return iid, phone


def an_event(instance_id: str) -> Event:
    return Event(
        type=EventType.MESSAGE_RECEIVED,
        instance_id=instance_id,
        user_id="alice",
        data={"instanceId": instance_id, "messageId": new_id(), "body": "left behind"},
    )


async def test_an_event_committed_but_never_published_is_relayed(world: World) -> None:
    """As after a crash between the commit and the publish: the entry alone is in the store."""
    event = an_event(new_id())
    await world.repo.stage_event(None, outbox.pending(event, S))
    assert event.id in await world.pending_ids()

    await wait_for(lambda: world.received(event.id), timeout_s=15, message="relayed event")
    relayed = world.received(event.id)[0]
    assert relayed.type == event.type and relayed.data == event.data and relayed.user_id == "alice"

    async def cleared() -> bool:
        return event.id not in await world.pending_ids()

    await wait_for(cleared, timeout_s=10, message="entry forgotten after the relay")
    assert len(world.received(event.id)) == 1


async def test_a_publish_the_broker_refuses_stays_until_the_relay_sends_it(world: World) -> None:
    """The normal path with the broker gone (a closed connection): the event stays in the
    outbox instead of being lost, and the relay (on the worker's live connection) sends it."""
    gone = Bus(world.amqp_url, service="outbox-gone", shard_count=S)
    await gone.connect()
    await gone.close()
    event = an_event(new_id())
    await world.repo.stage_event(None, outbox.pending(event, S))
    assert await outbox.deliver_all(gone, [event], world.worker.recorder.published) == [False]
    assert event.id in await world.pending_ids()
    await wait_for(lambda: world.received(event.id), timeout_s=15, message="relayed after a refusal")


async def test_the_normal_path_publishes_once_and_leaves_nothing(world: World) -> None:
    iid, phone = await paired_instance(world.bus)
    contact = "15550009999"
    await sim_send(world.bus, contact, f"{phone}@s.whatsapp.net", text="through the outbox")

    def received() -> list[Event]:
        return [
            e
            for e in world.events
            if e.type == EventType.MESSAGE_RECEIVED
            and e.instance_id == iid
            and e.data["body"] == "through the outbox"
        ]

    await wait_for(received, timeout_s=15, message="message_received")
    # Nothing of this instance is left waiting once the batched cleanup ran (every 50 ms):
    # connected, qr_received, instance.created and the message went out on the normal path.
    shard = shard_for(iid, S)

    async def nothing_left() -> bool:
        leftovers = await world.repo.outbox_due([shard], utcnow() + timedelta(hours=1), 1000)
        return not [e for e in leftovers if Event.from_bytes(e.body).instance_id == iid]

    await wait_for(nothing_left, timeout_s=5, message="outbox entries cleared")
    assert len(received()) == 1
