"""Two worker processes on one simulated network: a session linked in a child process exchanges
messages with one in this process, and the same device started in both is a double connection,
detected and counted once."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import wait_for
from wa_common.bus import Bus
from wa_common.sim_client import sim_scan, watch_double_connections
from wa_session_worker.engines.base import (
    Connected,
    DeviceRecord,
    Disconnected,
    EngineEvent,
    Message,
    QrCode,
    Receipt,
)
from wa_session_worker.engines.simulator import SimTimings, SimulatorEngine

CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, json, sys
    from wa_session_worker.engines.base import DeviceRecord
    from wa_session_worker.engines.simulator import SimTimings, SimulatorEngine

    async def main():
        async def on_event(event):
            data = dataclasses.asdict(event)
            if data.get("media"):
                data["media"]["data"] = None
            print(json.dumps({"kind": type(event).__name__, **data}), flush=True)
        timings = SimTimings(delivered_ms=20, read_ms=40, presence_interval_s=0.3)
        engine = SimulatorEngine(on_event, amqp_url=sys.argv[1], timings=timings, node="child")
        await engine.start()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"kind": "ready"}), flush=True)
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "start":
                device = DeviceRecord(**cmd["device"]) if cmd.get("device") else None
                await engine.start_session(cmd["instance"], device)
            elif cmd["op"] == "send":
                result = await engine.send_text(cmd["instance"], cmd["to"], cmd["text"])
                print(json.dumps({"kind": "sent", "message_id": result.message_id}), flush=True)
        await engine.close()

    asyncio.run(main())
    """
)


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if line.startswith(b"{"):
                self.lines.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == kind]

    async def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self.reader


async def test_two_processes_message_each_other_and_double_connections_are_counted(
    amqp_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), amqp_url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    child = Child(proc)
    events: list[EngineEvent] = []

    async def record(event: EngineEvent) -> None:
        events.append(event)

    def of(kind: type) -> list[Any]:
        return [e for e in events if isinstance(e, kind)]

    engine = SimulatorEngine(
        record,
        amqp_url=amqp_url,
        timings=SimTimings(delivered_ms=20, read_ms=40, presence_interval_s=0.3),
        node="parent",
    )
    await engine.start()
    client = Bus(amqp_url, service="sim-test-processes")
    await client.connect(declare=False, timeout_s=30.0)
    watch = await watch_double_connections(client)
    phone_parent = "1555" + "".join(random.choices("0123456789", k=7))
    phone_child = "1555" + "".join(random.choices("0123456789", k=7))
    try:
        await wait_for(lambda: child.of("ready"), timeout_s=30, message="child engine ready")
        # Link one instance in each process.
        await engine.start_session("p-1", None)
        await sim_scan(client, (await wait_for(lambda: of(QrCode)))[0].code, phone_parent)
        await wait_for(lambda: of(Connected))
        await child.send(op="start", instance="c-1")
        qr = (await wait_for(lambda: child.of("QrCode"), timeout_s=15))[0]
        await sim_scan(client, qr["code"], phone_child)
        await wait_for(lambda: child.of("Connected"), timeout_s=15)
        child_device = child.of("Paired")[0]["device"]

        # Child → parent, and the receipts come back across processes.
        await child.send(
            op="send", instance="c-1", to=f"{phone_parent}@s.whatsapp.net", text="from the child"
        )
        got = (await wait_for(lambda: of(Message), timeout_s=15))[0]
        assert got.text == "from the child" and got.sender_jid == f"{phone_child}@s.whatsapp.net"
        await wait_for(lambda: len(child.of("Receipt")) >= 2, timeout_s=15)
        assert [r["status"] for r in child.of("Receipt")] == ["delivered", "read"]
        sent = await engine.send_text("p-1", f"{phone_child}@s.whatsapp.net", "from the parent")
        inbound = (await wait_for(lambda: child.of("Message"), timeout_s=15))[0]
        assert inbound["message_id"] == sent.message_id and inbound["text"] == "from the parent"
        await wait_for(lambda: len(of(Receipt)) >= 2, timeout_s=15)
        assert watch.count == 0

        # The child's device started here too: two live sessions of one device, counted once.
        await engine.start_session("c-1", DeviceRecord(**child_device))
        replaced = await wait_for(lambda: child.of("Disconnected"), timeout_s=15)
        assert replaced[0]["reason"] == "stream_replaced" and replaced[0]["will_reconnect"] is False
        await wait_for(lambda: watch.count == 1, message="one double-connection alert")
        assert watch.alerts[0].replaced_worker == "child" and watch.alerts[0].by_worker == "parent"
        assert engine.double_connections == 0
        assert not [e for e in of(Disconnected) if e.instance_id == "c-1"]
    finally:
        await watch.stop()
        await child.close()
        await engine.close()
        await client.close()
