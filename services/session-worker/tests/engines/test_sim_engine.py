"""The simulator engine on the real RabbitMQ: several engines on separate connections are several
workers on one simulated network (``wa.sim``)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import wait_for
from wa_common.bus import Bus
from wa_common.schemas.sim import SimError
from wa_common.sim_client import (
    sim_enter_code,
    sim_roll_call,
    sim_scan,
    sim_send,
    sim_unlink,
    watch_double_connections,
)
from wa_session_worker.engines.base import (
    Connected,
    DeviceRecord,
    Disconnected,
    EngineError,
    EngineEvent,
    LoggedOut,
    Message,
    OutgoingMedia,
    Paired,
    QrCode,
    Receipt,
    SessionNotConnected,
    SessionStatus,
)
from wa_session_worker.engines.factory import build_engine
from wa_session_worker.engines.settings import EngineSettings
from wa_session_worker.engines.simulator import SimTimings, SimulatorEngine

QR_FORMAT = re.compile(r"^2@[A-Za-z0-9+/=]+,[A-Za-z0-9+/]{43}=,[A-Za-z0-9+/]{43}=,[A-Za-z0-9+/]{43}=$")
FAST = SimTimings(
    qr_first_s=5.0, qr_next_s=5.0, qr_codes=2, delivered_ms=20, read_ms=40, presence_interval_s=0.3
)


def new_phone() -> str:
    return "1555" + "".join(random.choices("0123456789", k=7))


class Recorder:
    """An engine with the events it emitted."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.engine: SimulatorEngine

    async def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)

    def of(self, kind: type, instance_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (instance_id is None or getattr(e, "instance_id", None) == instance_id)
        ]

    async def next(self, kind: type, instance_id: str, count: int = 1) -> list[Any]:
        return await wait_for(
            lambda: len(self.of(kind, instance_id)) >= count and self.of(kind, instance_id),
            timeout_s=10,
            message=f"{count} {kind.__name__} for {instance_id}",
        )


@pytest.fixture
async def network(amqp_url: str) -> AsyncIterator[Any]:
    """A factory of engines ("workers"), each with its own broker connection, plus a client bus."""
    engines: list[SimulatorEngine] = []
    client = Bus(amqp_url, service="sim-test-client")
    await client.connect(declare=False, timeout_s=30.0)
    channel = await client.connection.channel()
    await channel.declare_exchange("wa.sim", "topic", durable=True)
    await channel.close()

    async def make(timings: SimTimings = FAST, node: str | None = None) -> Recorder:
        recorder = Recorder()
        engine = SimulatorEngine(recorder, amqp_url=amqp_url, timings=timings, node=node)
        await engine.start()
        recorder.engine = engine
        engines.append(engine)
        return recorder

    make.client = client  # type: ignore[attr-defined]
    yield make
    for engine in engines:
        await engine.close()
    await client.close()


async def link(worker: Recorder, client: Bus, instance_id: str, phone: str) -> DeviceRecord:
    await worker.engine.start_session(instance_id, None)
    qr = (await worker.next(QrCode, instance_id))[0]
    await sim_scan(client, qr.code, phone, push_name="Alice")
    await worker.next(Connected, instance_id)
    return worker.of(Paired, instance_id)[0].device


async def heard_presences(client: Bus, jid: str, count: int) -> None:
    """Wait until ``count`` presence announcements of ``jid`` went round the network."""
    heard: list[bytes] = []

    async def on_presence(delivery: Any) -> None:
        heard.append(delivery.body)

    user = jid.split("@")[0]
    consumer = await client.consume_transient([("wa.sim", f"presence.{user}")], on_presence, name_prefix="t")
    try:
        await wait_for(lambda: len(heard) >= count, message=f"{count} presences")
    finally:
        await consumer.cancel(1.0)


async def test_qr_codes_have_whatsmeow_format_rotate_and_time_out(network: Any) -> None:
    worker = await network(SimTimings(qr_first_s=0.3, qr_next_s=0.15, qr_codes=3))
    await worker.engine.start_session("inst-qr", None)
    assert worker.engine.status("inst-qr") == SessionStatus.QR
    await worker.next(LoggedOut, "inst-qr")
    codes = worker.of(QrCode, "inst-qr")
    assert [c.attempt for c in codes] == [1, 2, 3]
    assert [c.expires_in_s for c in codes] == [0.3, 0.15, 0.15]
    assert len({c.code for c in codes}) == 3
    assert all(QR_FORMAT.match(c.code) for c in codes), codes[0].code
    assert worker.of(LoggedOut, "inst-qr")[0].reason == "qr_timeout"
    assert worker.engine.status("inst-qr") == SessionStatus.DISCONNECTED
    with pytest.raises(SimError):  # expired codes are gone from the network
        await sim_scan(network.client, codes[-1].code, new_phone())


async def test_scan_pairs_then_connects_and_the_device_resumes_on_another_worker(network: Any) -> None:
    worker_a, worker_b = await network(node="a"), await network(node="b")
    watch = await watch_double_connections(network.client)
    phone = new_phone()
    device = await link(worker_a, network.client, "inst-1", phone)

    kinds = [type(e) for e in worker_a.events]
    assert kinds == [QrCode, Paired, Connected]
    assert device.jid == f"{phone}@s.whatsapp.net"
    assert device.data["device_id"] and device.data["engine"] == "simulator"
    assert worker_a.of(Paired)[0].push_name == "Alice"
    assert worker_a.of(Connected)[0].jid == device.jid
    assert worker_a.engine.status("inst-1") == SessionStatus.CONNECTED
    with pytest.raises(SimError):  # the QR is no longer shown
        await sim_scan(network.client, worker_a.of(QrCode)[0].code, new_phone())

    await worker_a.engine.stop_session("inst-1")
    assert worker_a.engine.status("inst-1") == SessionStatus.DISCONNECTED
    await worker_b.engine.start_session("inst-1", device)
    connected = await worker_b.next(Connected, "inst-1")
    assert connected[0].jid == device.jid
    assert not worker_b.of(QrCode)
    # Heartbeats go round a few times: no double connection anywhere.
    await heard_presences(network.client, device.jid, 3)
    assert worker_a.engine.double_connections == worker_b.engine.double_connections == 0
    assert watch.count == 0
    await watch.stop()


async def test_two_live_sessions_of_one_device_are_detected_and_counted_once(network: Any) -> None:
    worker_a, worker_b = await network(node="a"), await network(node="b")
    watch = await watch_double_connections(network.client)
    device = await link(worker_a, network.client, "inst-dbl", new_phone())

    await worker_b.engine.start_session("inst-dbl", device)  # worker A still holds it
    await worker_b.next(Connected, "inst-dbl")
    replaced = await worker_a.next(Disconnected, "inst-dbl")
    assert replaced[0].reason == "stream_replaced" and not replaced[0].will_reconnect
    await wait_for(lambda: watch.count == 1, message="double-connection alert")
    assert worker_a.engine.double_connections == 1
    assert worker_b.engine.double_connections == 0
    assert worker_a.engine.status("inst-dbl") == SessionStatus.DISCONNECTED
    assert worker_b.engine.status("inst-dbl") == SessionStatus.CONNECTED
    assert watch.alerts[0].replaced_worker == "a" and watch.alerts[0].by_worker == "b"
    # Later heartbeats of the survivor count nothing more.
    await heard_presences(network.client, device.jid, 3)
    assert worker_b.engine.double_connections == 0
    assert len(worker_b.of(Connected, "inst-dbl")) == 1
    assert watch.count == 1
    await watch.stop()


async def test_messages_and_receipts_between_two_instances_on_two_workers(network: Any) -> None:
    worker_a, worker_b = await network(node="a"), await network(node="b")
    phone_a, phone_b = new_phone(), new_phone()
    await link(worker_a, network.client, "inst-a", phone_a)
    await link(worker_b, network.client, "inst-b", phone_b)
    jid_a, jid_b = f"{phone_a}@s.whatsapp.net", f"{phone_b}@s.whatsapp.net"

    sent = await worker_a.engine.send_text("inst-a", jid_b, "hello b")
    assert sent.message_id.startswith("3EB0") and sent.timestamp > 0
    inbound = (await worker_b.next(Message, "inst-b"))[0]
    assert (inbound.message_id, inbound.chat_jid, inbound.sender_jid, inbound.from_me) == (
        sent.message_id,
        jid_a,
        jid_a,
        False,
    )
    assert inbound.text == "hello b" and inbound.type == "conversation" and inbound.push_name == "Alice"
    receipts = await worker_a.next(Receipt, "inst-a", count=2)
    assert [(r.status, r.chat_jid, r.message_ids) for r in receipts] == [
        ("delivered", jid_b, (sent.message_id,)),
        ("read", jid_b, (sent.message_id,)),
    ]
    assert not worker_a.of(Message, "inst-a")  # no echo of our own send

    payload = bytes(range(256)) * 40
    media = OutgoingMedia(payload, "image/jpeg", filename="p.jpg", caption="a photo")
    sent_media = await worker_b.engine.send_media("inst-b", jid_a, media)
    got = (await worker_a.next(Message, "inst-a"))[0]
    assert got.message_id == sent_media.message_id and got.type == "image" and got.text == "a photo"
    assert got.media is not None
    assert (got.media.data, got.media.size, got.media.mimetype, got.media.filename, got.media.caption) == (
        payload,
        len(payload),
        "image/jpeg",
        "p.jpg",
        "a photo",
    )
    contacts = await worker_a.engine.fetch_contacts("inst-a")
    assert jid_b in {c.jid for c in contacts}
    assert len(contacts) >= 4  # the phone's book (3) + the chat with b


async def test_external_contacts_receipts_and_inbound_messages(network: Any) -> None:
    worker = await network()
    phone = new_phone()
    await link(worker, network.client, "inst-x", phone)
    jid = f"{phone}@s.whatsapp.net"
    external = "447700900123@s.whatsapp.net"

    sent = await worker.engine.send_text("inst-x", external, "hi stranger")
    receipts = await worker.next(Receipt, "inst-x", count=2)
    assert [(r.status, r.chat_jid, r.message_ids) for r in receipts] == [
        ("delivered", external, (sent.message_id,)),
        ("read", external, (sent.message_id,)),
    ]
    with pytest.raises(EngineError) as not_on_wa:
        await worker.engine.send_text("inst-x", "999123456@s.whatsapp.net", "nobody")
    assert not_on_wa.value.status == 400
    assert await worker.engine.check_number("inst-x", "+44 7700 900123") == external
    assert await worker.engine.check_number("inst-x", "999123456") is None

    msg_id = await sim_send(network.client, "447700900123", jid, text="hello from outside", push_name="Bob")
    inbound = (await worker.next(Message, "inst-x"))[0]
    assert (inbound.message_id, inbound.chat_jid, inbound.from_me, inbound.push_name, inbound.text) == (
        msg_id,
        external,
        False,
        "Bob",
        "hello from outside",
    )
    await sim_send(
        network.client,
        "447700900123",
        jid,
        text="doc",
        media=b"%PDF-1.4",
        mimetype="application/pdf",
        filename="a.pdf",
    )
    doc = (await worker.next(Message, "inst-x", count=2))[1]
    assert doc.type == "document" and doc.media is not None and doc.media.data == b"%PDF-1.4"
    assert doc.media.filename == "a.pdf" and doc.media.size == 8

    # The account's own phone sends: the linked instance sees it as from_me.
    await sim_send(network.client, phone, external, text="typed on the phone")
    echo = (await worker.next(Message, "inst-x", count=3))[2]
    assert echo.from_me and echo.chat_jid == external and echo.sender_jid == jid
    with pytest.raises(SimError):
        await sim_send(network.client, "447700900123", "447700900999@s.whatsapp.net", text="nobody home")


async def test_pairing_code_is_accepted_only_from_the_requested_phone(network: Any) -> None:
    worker = await network()
    phone = new_phone()
    await worker.engine.start_session("inst-code", None)
    await worker.next(QrCode, "inst-code")
    code = await worker.engine.pair_phone("inst-code", f"+{phone}")
    assert re.match(r"^[1-9A-HJ-NP-TV-Z]{4}-[1-9A-HJ-NP-TV-Z]{4}$", code)
    await sim_enter_code(network.client, code, new_phone())  # another phone: ignored
    await sim_enter_code(network.client, code.lower(), phone)
    await worker.next(Connected, "inst-code")
    assert worker.of(Paired, "inst-code")[0].device.jid == f"{phone}@s.whatsapp.net"
    with pytest.raises(SimError):
        await sim_enter_code(network.client, code, phone)
    with pytest.raises(EngineError) as not_linking:
        await worker.engine.pair_phone("inst-code", phone)
    assert not_linking.value.status == 409


async def test_logged_out_and_unlinked_devices_never_reconnect(network: Any) -> None:
    worker_a, worker_b = await network(node="a"), await network(node="b")
    device = await link(worker_a, network.client, "inst-out", new_phone())
    await worker_a.engine.logout("inst-out")
    assert worker_a.of(LoggedOut, "inst-out")[0].reason == "logout"
    with pytest.raises(SessionNotConnected):
        await worker_a.engine.send_text("inst-out", "447700900123@s.whatsapp.net", "x")
    await worker_b.engine.start_session("inst-out", device)
    assert (await worker_b.next(LoggedOut, "inst-out"))[0].reason == "device_removed"
    assert not worker_b.of(Connected, "inst-out")

    phone = new_phone()
    device2 = await link(worker_a, network.client, "inst-unlink", phone)
    await sim_unlink(network.client, phone)
    assert (await worker_a.next(LoggedOut, "inst-unlink"))[0].reason == "device_removed"
    await worker_b.engine.start_session("inst-unlink", device2)
    assert (await worker_b.next(LoggedOut, "inst-unlink"))[0].reason == "device_removed"


async def test_roll_call_lists_sessions_of_every_worker(network: Any) -> None:
    worker_a, worker_b = await network(node="rc-a"), await network(node="rc-b")
    await link(worker_a, network.client, "inst-rc-a", new_phone())
    await worker_b.engine.start_session("inst-rc-b", None)
    answers = await sim_roll_call(network.client, wait_s=0.5)
    by_node = {a.worker: a for a in answers}
    assert {s.instance_id: s.status for s in by_node["rc-a"].sessions} == {"inst-rc-a": "connected"}
    assert {s.instance_id: s.status for s in by_node["rc-b"].sessions} == {"inst-rc-b": "qr"}


async def test_factory_builds_the_simulator_from_settings(amqp_url: str) -> None:
    settings = EngineSettings(WA_PROFILE="dev", AMQP_URL=amqp_url, sim_qr_first_s=1.5)
    engine = build_engine(settings, Recorder())
    assert isinstance(engine, SimulatorEngine) and engine.timings.qr_first_s == 1.5


async def test_a_dropped_broker_connection_is_a_network_blip(network: Any, amqp_vhost: str) -> None:
    from conftest import close_broker_connections

    worker = await network(node="blip")
    phone = new_phone()
    await link(worker, network.client, "inst-blip", phone)
    closed = await asyncio.to_thread(close_broker_connections, "session-worker-sim", amqp_vhost)
    assert closed >= 1
    lost = await worker.next(Disconnected, "inst-blip")
    assert lost[0].reason == "network" and lost[0].will_reconnect
    await worker.next(Connected, "inst-blip", count=2)
    assert worker.engine.status("inst-blip") == SessionStatus.CONNECTED

    async def delivered() -> bool:
        try:
            await sim_send(network.client, "447700900777", f"{phone}@s.whatsapp.net", text="after the blip")
        except SimError:
            return False  # bindings not restored yet
        return True

    await wait_for(delivered, timeout_s=20, interval_s=0.2, message="session reachable again")
    got = await worker.next(Message, "inst-blip")
    assert got[-1].text == "after the blip"
