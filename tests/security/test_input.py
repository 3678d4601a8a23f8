"""Findings 4, 8, 9, 10 and 13 (slow bodies): input the gateway can judge by itself is refused
with a 400 that names the field, before it reaches a store or the bus; nothing is dead-lettered;
no input gives a 5xx or hangs the connection."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from tests.security.conftest import SecuritySystem, User, create_instance

pytestmark = pytest.mark.e2e

NUL = "bad\x00value"
SURROGATE = "bad\ud800value"
HUGE = 2**63
LONG_URL = "https://example.com/" + "a" * 5000


async def _dead_letter_counts(amqp_url: str) -> dict[str, int]:
    """Messages in every dead-letter queue of the system's topology."""
    from wa_common.bus.topology import all_queue_specs, dead_letter_queue

    counts: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for spec in all_queue_specs(8):
            name = dead_letter_queue(spec.name)
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue
            counts[name] = int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()
    return counts


def _json(body: Any) -> dict[str, Any]:
    """Request arguments carrying ``body`` as JSON text with ``\\uXXXX`` escapes (httpx cannot
    encode a lone surrogate itself; a client's JSON library can)."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def _field_of(response: Any) -> str:
    body = response.json()
    details = body.get("details") or []
    return str(details[0]["field"]) if details else ""


async def test_nul_characters_and_oversized_headers_are_refused_and_nothing_is_dead_lettered(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """A NUL in a field used to fail the store write, retry the command and dead-letter it
    (with ~0.9 MB of custom webhook headers per update: 18 MB for 20 updates)."""
    user = await new_user()
    instance = await create_instance(sec, user)
    path = f"/api/instances/{instance['id']}"
    big_headers = {f"X-Pad-{i}": "v" * 4000 for i in range(200)}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"description": NUL}, "description"),
        ({"name": SURROGATE}, "name"),
        ({"webhookSettings": {"headers": {"X-Custom": NUL}}}, "webhookSettings.headers.X-Custom"),
        ({"webhookSettings": {"headers": big_headers}}, "webhookSettings.headers"),
        ({"webhookSettings": {"headers": {"X-Name": "café"}}}, "webhookSettings.headers.X-Name"),
        (
            {"webhookSettings": {"headers": {"X-Name": "a\r\nX-Injected: 1"}}},
            "webhookSettings.headers.X-Name",
        ),
        ({"webhookSettings": {"headers": {"Bad Name": "v"}}}, "webhookSettings.headers"),
        ({"webhookSettings": {"secret": NUL}}, "webhookSettings.secret"),
    ]
    before = await _dead_letter_counts(sec.amqp_url)
    started = time.monotonic()
    for body, field in cases:
        request = _json(body)
        response = await sec.api.put(path, headers={**user.bearer, **request.pop("headers")}, **request)
        assert response.status_code == 400, (body if len(str(body)) < 200 else field, response.text)
        assert _field_of(response).startswith(field), (field, response.json())
    create = await sec.api.post(
        "/api/instances", headers=user.bearer, json={"name": "x", "headers": {"X-A": "é"}}
    )
    assert create.status_code == 400 and _field_of(create).startswith("headers")
    assert time.monotonic() - started < 10, "refused at the edge, not after a worker timeout"
    # The instance is unchanged and the bus holds nothing new in any dead-letter queue.
    current = (await sec.api.get(path, headers=user.bearer)).json()
    assert current["description"] in (None, "") and current["webhookSettings"]["headers"] == {}
    assert await _dead_letter_counts(sec.amqp_url) == before


async def test_no_input_gives_a_5xx_or_breaks_the_connection(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """The 22 probes of the attack run that answered 5xx or hung, and their relatives: each
    must be a 4xx, and the next request on the same connection must work."""
    user = await new_user()
    instance = await create_instance(sec, user)
    iid = instance["id"]
    h = user.bearer
    admin = sec.admin.bearer
    probes: list[tuple[str, str, dict[str, Any], Any]] = [
        ("GET", f"/api/instances/{iid}/activity", {"skip": HUGE}, None),
        ("GET", f"/api/instances/{iid}/chats/79001234567/messages", {"skip": HUGE}, None),
        ("GET", f"/api/instances/{iid}/contacts/db", {"skip": HUGE}, None),
        ("GET", f"/api/whatsapp/{iid}/contacts/db", {"skip": HUGE}, None),
        ("GET", f"/api/instances/{iid}/webhooks/deliveries", {"skip": HUGE}, None),
        ("GET", "/api/users", {"skip": HUGE}, None),
        ("GET", f"/api/instances/{iid}/contacts/db", {"search": NUL}, None),
        ("GET", f"/api/instances/{iid}/events", {"types": NUL}, None),
        ("POST", f"/api/instances/{iid}/contacts/save", {}, {"number": "79001234567", "name": "x" * 600}),
        ("POST", f"/api/instances/{iid}/contacts/save", {}, {"number": "79001234567", "name": SURROGATE}),
        ("POST", f"/api/instances/{iid}/contacts/save", {}, {"number": "79001234567", "about": NUL}),
        ("POST", f"/api/instances/{iid}/contacts/add", {}, {"phone": "79001234567", "name": NUL}),
        ("POST", f"/api/instances/{iid}/send", {}, {"phone": "79001234567", "message": NUL}),
        ("POST", f"/api/instances/{iid}/send", {}, {"phone": SURROGATE, "message": "hi"}),
        (
            "POST",
            f"/api/instances/{iid}/send-media",
            {},
            {"phone": "79001234567", "url": "https://e.x/" + "a" * 5000},
        ),
        ("POST", "/api/instances", {}, {"name": "x", "maxRetries": HUGE}),
        ("POST", "/api/instances", {}, {"name": "x", "webhookUrl": "https://e.x/" + "a" * 3000}),
        ("POST", "/api/auth/login", {}, {"email": SURROGATE, "password": "whatever-long"}),
        ("POST", "/api/auth/login", {}, {"email": "a@b.c", "password": NUL}),
        ("PATCH", f"/api/users/{user.id}", {}, {"firstName": SURROGATE}),
        ("PUT", f"/api/users/{user.id}/limits", {}, {"maxMessagesSent": HUGE}),
        ("GET", f"/api/stats/instances/{iid}", {"period": NUL}, None),
        ("GET", "/api/events/stream", {"instanceId": NUL}, None),
    ]
    for method, path, params, body in probes:
        headers = admin if path == "/api/users" or path.endswith("/limits") else h
        if body is not None:
            request = _json(body)
            headers = {**headers, **request.pop("headers")}
        else:
            request = {}
        response = await sec.api.request(method, path, params=params, headers=headers, **request)
        label = f"{method} {path} {str(params)[:60]} {str(body)[:60]}"
        assert 400 <= response.status_code < 500, (label, response.status_code, response.text[:300])
        assert response.status_code not in (401, 403), (label, response.text)
        assert response.json()["error"], label
        follow = await sec.api.get(f"/api/instances/{iid}/status", headers=h)
        assert follow.status_code == 200, (label, "the next request failed", follow.text)


@pytest.mark.parametrize(
    "phone",
    [
        "\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0661\u0661\u0661\u0661",  # Arabic-Indic digits
        "\uff11\uff15\uff15\uff15\uff10\uff10\uff10\uff11\uff11\uff11\uff11",  # fullwidth digits
        "1555000\n1111",
        "15550001111\n@s.whatsapp.net",
    ],
)
async def test_phone_numbers_and_jids_take_ascii_digits_only(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]], phone: str
) -> None:
    user = await new_user()
    instance = await create_instance(sec, user)
    send = await sec.api.post(
        f"/api/instances/{instance['id']}/send", headers=user.bearer, json={"phone": phone, "message": "hi"}
    )
    assert send.status_code == 400 and _field_of(send) == "phone", send.text
    save = await sec.api.post(
        f"/api/instances/{instance['id']}/contacts/add", headers=user.bearer, json={"phone": phone}
    )
    assert save.status_code == 400, save.text


async def _raw_request(port: int, head: bytes, body_part: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``head`` and a partial body, then read until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(head + body_part)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), wait_s)
        return data, time.monotonic() - started
    finally:
        writer.close()


async def test_slow_partial_bodies_are_cut_off(
    sec: SecuritySystem, new_user: Callable[..., Awaitable[User]]
) -> None:
    """A body that stops arriving used to hold the connection 70 s+. The security gateway has
    ``GATEWAY_BODY_IDLE_TIMEOUT_S=1``: an idle body gets 408 within a few seconds."""
    user = await new_user()
    instance = await create_instance(sec, user)
    port = sec.cluster.processes["gateway"].port
    head = (
        f"POST /api/instances/{instance['id']}/send HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"x-api-key: {user.api_key}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    data, elapsed = await _raw_request(port, head, b'{"phone": "79001234567", "mess', wait_s=15)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert elapsed < 8, elapsed
