"""``make demo``: see the product work in a minute, against a system started by ``make run``.

Runs the first three end-to-end scenarios through the public REST API and prints each step in
plain words: the admin creates a user, the user creates an instance with a webhook, the QR code
is shown in the terminal and "scanned" by a simulated phone, messages go out (text, media by URL,
a file) and come back as signed webhooks with delivered/read receipts, and a simulated contact
writes in (Cyrillic, emoji and a picture). Webhooks arrive at a small receiver on loopback that
verifies every signature like the reference's JavaScript snippet.

    make run                 # in one terminal
    make demo                # in another

Environment: ``DEMO_GATEWAY_URL`` (default ``http://127.0.0.1:$GATEWAY_PORT``, port 8080),
``ADMIN_EMAIL`` / ``ADMIN_PASSWORD`` (defaults admin@example.com / admin123), ``AMQP_URL`` (the
simulated phone sends its picture over the simulated network, as ``make run`` configures it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import segno

from tests.support import sim
from tests.support.http import HttpServer
from tests.support.webhooks import Hook, WebhookReceiver

GATEWAY_URL = os.environ.get("DEMO_GATEWAY_URL", f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8080')}")
ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL", "admin@example.com")
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD", "admin123")
CONTACT = "79001234567"  # a simulated contact with no live session: answers delivered, then read
WRITER = "79007654321"  # a simulated contact that writes to the instance
GREETING = "Привет! Как дела? 👋🙂"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\x00" * 64
T = TypeVar("T")

NOT_RUNNING = f"""
The system does not answer at {GATEWAY_URL}.

Start it first, in another terminal, from this directory:

    make run

(it needs RabbitMQ on 127.0.0.1:5672 and prints the gateway URL when ready), then run
`make demo` again. If the gateway runs elsewhere, set DEMO_GATEWAY_URL=http://host:port.
"""


class DemoError(RuntimeError):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n[{n}] {text}")


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 45) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: nothing after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def expect(response: httpx.Response, *codes: int) -> Any:
    if response.status_code not in codes:
        raise DemoError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    return (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    )


def hook_line(hook: Hook) -> str:
    check = "signature verified" if hook.verified else "SIGNATURE DID NOT VERIFY"
    data = hook.data
    detail = ", ".join(
        f"{k}={data[k]!r}" for k in ("messageId", "status", "body", "from", "willReconnect") if k in data
    )
    return f"    webhook {hook.event:<16} {detail}  ({check})"


async def main() -> int:
    async with httpx.AsyncClient(base_url=GATEWAY_URL, timeout=30) as api:
        try:
            ready = await api.get("/readyz")
        except httpx.HTTPError:
            say(NOT_RUNNING)
            return 2
        if ready.status_code != 200:
            say(f"The gateway at {GATEWAY_URL} answers but is not ready yet: {ready.text[:200]}")
            say("Wait until `make run` has started every service, then run `make demo` again.")
            return 2
        receiver = await WebhookReceiver(on_hook=lambda h: say(hook_line(h))).start()
        try:
            await demo(api, receiver)
        finally:
            await receiver.stop()
    say("\nDone: the system linked an instance, sent and received messages and pushed signed webhooks.")
    say(f"Explore the API at {GATEWAY_URL}/docs")
    return 0


async def demo(api: httpx.AsyncClient, receiver: WebhookReceiver) -> None:
    step(1, f"The administrator logs in ({ADMIN_EMAIL}).")
    login = await api.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    if login.status_code != 200:
        raise DemoError(
            f"admin login failed ({login.status_code}: {login.text[:200]}); "
            "set ADMIN_EMAIL/ADMIN_PASSWORD to the administrator of this system"
        )
    admin = {"Authorization": f"Bearer {login.json()['token']}"}

    async def settled() -> bool:
        # Right after `make run` the first worker holds every shard and hands some over as the
        # other joins; a session moved in the middle of the demo would lose its pending receipts.
        body = expect(await api.get("/api/admin/workers", headers=admin), 200)
        alive = [w for w in body["workers"] if w["alive"]]
        held = [len(w["shards"]) for w in alive]
        return bool(alive) and not body["unownedShards"] and min(held) >= body["shardCount"] // len(alive)

    await until(settled, "the session workers sharing the shards", timeout_s=90)

    email, password = f"demo-{secrets.token_hex(3)}@example.com", "demo-" + secrets.token_hex(6)
    step(2, f"The administrator creates a user {email}; the user logs in and reads /api/auth/me.")
    expect(
        await api.post(
            "/api/users",
            headers=admin,
            json={
                "email": email,
                "password": password,
                "firstName": "Demo",
                "lastName": "User",
                "role": "user",
            },
        ),
        200,
        201,
    )
    token = expect(await api.post("/api/auth/login", json={"email": email, "password": password}), 200)[
        "token"
    ]
    user = {"Authorization": f"Bearer {token}"}
    me = expect(await api.get("/api/auth/me", headers=user), 200)
    say(f"    logged in as {me['email']} (role {me['role']}, id {me['id']})")

    secret = "demo-" + secrets.token_hex(8)
    hook_url = receiver.url("demo", secret)
    step(3, f"The user creates an instance whose webhooks go to {hook_url} (signed with a secret).")
    created = expect(
        await api.post(
            "/api/instances",
            headers=user,
            json={
                "name": "Demo phone",
                "webhookUrl": hook_url,
                "webhookEnabled": True,
                "webhookSecret": secret,
                "notifyReceived": True,
                "notifySent": True,
                "notifyDelivery": True,
                "notifyRead": True,
            },
        ),
        201,
    )
    iid = created["id"]
    say(f"    201 Created: instance {iid}, status {created['status']}")
    try:
        await instance_demo(api, admin, user, iid, receiver)
    finally:
        step(10, "Cleaning up: the demo instance is deleted.")
        await api.delete(f"/api/instances/{iid}", headers=user)


async def instance_demo(
    api: httpx.AsyncClient, admin: dict[str, str], user: dict[str, str], iid: str, receiver: WebhookReceiver
) -> None:
    step(4, "The user polls the QR code (202 while it is generated, then 200).")

    async def qr() -> str | None:
        response = await api.get(f"/api/instances/{iid}/qr", headers=user)
        body = expect(response, 200, 202)
        say(f"    GET /qr -> {response.status_code} {body.get('status', '')}".rstrip())
        return body.get("qrCode") if response.status_code == 200 else None

    code = await until(qr, "QR code")
    png = await api.get(f"/api/instances/{iid}/qr", headers=user, params={"format": "png"})
    say(
        f"    the same code rendered by the API: ?format=png -> "
        f"{png.headers.get('content-type')}, {len(png.content)} bytes"
    )
    say("    here it is (a real phone could not use it: the simulator plays WhatsApp):")
    segno.make(code, error="l").terminal(compact=True)

    phone = "1555" + f"{secrets.randbelow(10**7):07d}"
    step(5, f"A simulated phone (+{phone}) scans the QR code.")
    expect(await api.post(f"/api/admin/sim/instances/{iid}/scan", headers=admin, json={"phone": phone}), 200)
    await receiver.wait(
        lambda: receiver.hooks("demo", "connected"), timeout_s=45, message="connected webhook"
    )
    status = expect(await api.get(f"/api/instances/{iid}/status", headers=user), 200)
    events = expect(
        await api.get(f"/api/instances/{iid}/events", headers=user, params={"types": "connected"}), 200
    )
    say(f"    status: {status['status']}; /events holds {events['count']} 'connected' event(s)")

    step(6, f"The user sends to +{CONTACT}: a text, a picture by URL and an uploaded file.")
    ids = [
        expect(
            await api.post(
                f"/api/whatsapp/{iid}/send",
                headers=user,
                json={"phone": CONTACT, "message": "Hello from the demo!"},
            ),
            200,
        )["id"]
    ]
    say(f"    text sent: id {ids[0]}")
    async with HttpServer() as media_server:
        media_url = media_server.serve("/picture.png", PNG, "image/png")
        media = await api.post(
            f"/api/whatsapp/{iid}/send-media",
            headers=user,
            json={
                "phone": CONTACT,
                "url": media_url,
                "caption": "a picture by URL",
                "filename": "picture.png",
            },
        )
    if media.status_code == 200:
        ids.append(media.json()["id"])
        say(f"    picture by URL ({media_url}) sent: id {ids[-1]}")
    else:
        say(f"    picture by URL refused ({media.status_code}: {media.json().get('error')}).")
        say("    (The worker refuses loopback media URLs unless WORKER_MEDIA_ALLOW_PRIVATE=true.)")
    upload = expect(
        await api.post(
            f"/api/whatsapp/{iid}/send-file",
            headers=user,
            data={"phone": CONTACT, "caption": "the report"},
            files={"file": ("report.pdf", b"%PDF-1.4 demo\n", "application/pdf")},
        ),
        200,
    )
    ids.append(upload["id"])
    say(f"    file uploaded and sent: id {ids[-1]}")
    say("    waiting for the contact's delivered and read receipts ...")
    want = {(i, s) for i in ids for s in ("delivered", "read")}
    await receiver.wait(
        lambda: (
            want
            <= {
                (h.data.get("messageId"), h.data.get("status"))
                for h in receiver.hooks("demo", "message_status")
            }
        ),
        timeout_s=45,
        message="delivered/read webhooks",
    )
    history = expect(
        await api.get(f"/api/instances/{iid}/chats/{CONTACT}@s.whatsapp.net/messages", headers=user), 200
    )
    for m in history["messages"]:
        say(
            f"    history: {m['messageType']:<9} {m['content'] or m['caption'] or '':<22} "
            f"status {m['status']}"
        )

    async def counted() -> dict[str, Any] | None:
        usage: dict[str, Any] = expect(await api.get(f"/api/stats/instances/{iid}", headers=user), 200)[
            "usage"
        ]
        return usage if usage["messagesSent"] >= len(ids) else None

    usage = await until(counted, "stats")
    say(
        f"    stats today: {usage['messagesSent']} sent, {usage['mediaSent']} media, "
        f"{usage['apiCalls']} API calls"
    )

    step(7, f"A simulated contact (+{WRITER}) writes in: {GREETING!r}, then sends a picture.")
    expect(
        await api.post(
            "/api/admin/sim/messages",
            headers=admin,
            json={"from": WRITER, "to": phone, "message": GREETING, "pushName": "Иван"},
        ),
        200,
    )
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "photo.png"
        picture.write_bytes(PNG)
        cli = await sim.send_file(WRITER, phone, picture, text="фото 📷", name="Иван")
    if cli.returncode != 0:
        say(
            "    (the simulated phone could not send its picture: "
            f"{(cli.stderr or cli.stdout).strip()[-300:]})"
        )
    wanted = 2 if cli.returncode == 0 else 1
    await receiver.wait(
        lambda: len(receiver.hooks("demo", "message_received")) >= wanted,
        timeout_s=45,
        message="message_received",
    )
    chat = expect(
        await api.get(f"/api/instances/{iid}/chats/{WRITER}@s.whatsapp.net/messages", headers=user), 200
    )
    for m in chat["messages"]:
        say(f"    history: from +{WRITER}: {m['messageType']:<6} {m['content'] or m['caption'] or ''}")

    step(8, "The user imports the instance's WhatsApp contacts into the database.")
    imported = expect(await api.post(f"/api/instances/{iid}/contacts/import", headers=user), 200)
    say(f"    {imported['message']}")
    contacts = expect(await api.get(f"/api/instances/{iid}/contacts/db", headers=user), 200)
    for c in contacts["contacts"]:
        say(f"    contact +{c['number']:<12} {c['name'] or c['pushName'] or ''}")

    step(9, "Every webhook arrived signed; all signatures verified as the reference's JS snippet does.")
    hooks = receiver.hooks("demo")
    bad = [h for h in hooks if not h.verified]
    say(f"    {len(hooks)} webhooks received, {len(bad)} with a bad signature")
    if bad:
        raise DemoError("some webhook signatures did not verify")


def run() -> int:
    try:
        return asyncio.run(main())
    except (DemoError, AssertionError) as exc:
        say(f"\nThe demo stopped: {exc}")
        say("Is `make run` still running and healthy? Its terminal shows each service's log.")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run())
