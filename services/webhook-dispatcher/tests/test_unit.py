"""Unit tests (no broker, no database): canonical JSON, signatures, headers, filter, netguard."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from datetime import UTC, datetime

import pytest

from tests.support.http import HttpServer
from wa_common.netguard import UnsafeURLError, address_refusal, check_url, guarded_client
from wa_webhooks.service import (
    REDACTED,
    InvalidHeader,
    canonical_json,
    iso_millis,
    request_headers,
    safe_error,
    sign,
    wants,
    webhook_body,
)

NODE = shutil.which("node")


def js_roundtrip(body: bytes) -> bytes:
    script = (
        "let d='';process.stdin.on('data',c=>d+=c)"
        ".on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(d))))"
    )
    assert NODE is not None
    return subprocess.run(
        [NODE, "-e", script], input=body, capture_output=True, check=True, timeout=30
    ).stdout


def tricky_values() -> dict[str, object]:
    rnd = random.Random(7)
    floats = [
        0.1,
        1.0,
        1e21,
        1e20,
        1e-7,
        1.5e-6,
        1e-6,
        -0.0,
        2**53 + 1,
        2**64,
        -3.25,
        1 / 3,
        5e-324,
        1e16,
        12.5,
    ]
    floats += [struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0] for _ in range(200)]
    floats = [f for f in floats if f == f and abs(f) != float("inf")]
    return {
        "b": 1,
        "10": "ten",
        "2": "two",
        "01": "not an index",
        "a": 'Привет 😀 é \u2028 \x01 \x7f "q" \\ / \t',
        "nested": {"z": [1, {"1": True, "0": None}], "y": "日本語"},
        "numbers": floats,
        "lone": "\ud83d\ude00 and \ud800",
    }


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_canonical_json_is_a_fixed_point_of_js_parse_and_stringify() -> None:
    body = canonical_json(tricky_values())
    assert js_roundtrip(body) == body


def test_canonical_json_matches_python_compact_json_for_plain_payloads() -> None:
    value = {"event": "message_received", "data": {"body": "Привет 😀", "n": 5, "ok": False}, "x": None}
    assert canonical_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_body_and_timestamp_format() -> None:
    when = datetime(2023, 1, 1, 12, 0, 0, 123999, tzinfo=UTC)
    assert iso_millis(when) == "2023-01-01T12:00:00.123Z"
    body = webhook_body("connected", {"instanceId": "i"}, when)
    assert body == b'{"event":"connected","data":{"instanceId":"i"},"timestamp":"2023-01-01T12:00:00.123Z"}'


def test_headers_never_overridden_and_signature() -> None:
    body = b'{"a":"\xd0\x9f"}'
    h = request_headers(
        event_id="E1",
        event="connected",
        timestamp="t",
        body=body,
        secret="k",
        custom={
            "X-WEBHOOK-ID": "x",
            "X-Webhook-Other": "x",
            "content-type": "text/plain",
            "Transfer-Encoding": "chunked",
            "X-Ok": "1",
            "Authorization": "  Bearer a b\tc ",
        },
    )
    assert h == {
        "X-Ok": "1",
        "Authorization": "Bearer a b\tc",
        "Content-Type": "application/json",
        "User-Agent": h["User-Agent"],
        "X-Webhook-Id": "E1",
        "X-Webhook-Event": "connected",
        "X-Webhook-Timestamp": "t",
        "X-Webhook-Signature": sign(body, "k"),
    }
    assert "X-Webhook-Signature" not in request_headers(
        event_id="E1", event="connected", timestamp="t", body=body, secret=None, custom=None
    )


@pytest.mark.parametrize(
    ("name", "value", "names_header"),
    [
        ("Bad Name", "v", "Bad Name"),
        ("X-Name\r\nX-Injected", "v", "X-Name"),
        ("", "v", "''"),
        ("X-" + "n" * 200, "v", "X-nnn"),
        ("X-Crlf", "a\r\nX-Injected: 1", "X-Crlf"),
        ("X-Lf", "a\nb", "X-Lf"),
        ("X-Nul", "Bearer \x00top-secret", "X-Nul"),
        ("X-Accent", "Café-secret", "X-Accent"),
        ("X-Emoji", "key-\U0001f511", "X-Emoji"),
        ("X-Del", "a\x7fb", "X-Del"),
        ("X-Long", "v" * 9000, "X-Long"),
    ],
)
def test_a_header_http_cannot_carry_fails_the_attempt_naming_it_without_its_value(
    name: str, value: str, names_header: str
) -> None:
    with pytest.raises(InvalidHeader) as caught:
        request_headers(
            event_id="E1", event="connected", timestamp="t", body=b"{}", secret="k", custom={name: value}
        )
    message = str(caught.value)
    assert names_header in message
    assert value not in message and "secret" not in message and "\x00" not in message


def test_error_texts_never_carry_secrets_or_control_characters() -> None:
    secret, token = "s3cr\u00e9t-\U0001f511", "Bearer abc\x00def"
    text = (
        f"LocalProtocolError: Illegal header value {token.encode()!r} and {token!r}; "
        f"key {secret} / {secret!r} at https://hooks.example/T0/B0/XYZ\r\nnext line\x00"
    )
    safe = safe_error(text, [secret, token, "https://hooks.example/T0/B0/XYZ", None, "1"])
    assert "abc" not in safe and "s3cr" not in safe and "XYZ" not in safe
    assert safe.count(REDACTED) == 5
    assert not any(ch in safe for ch in "\x00\r\n")
    assert len(safe_error("x" * 10_000, [])) == 500
    assert safe_error("lone \ud800 surrogate", []).encode("utf-8")


@pytest.mark.parametrize(
    ("event", "data", "flags", "expected"),
    [
        ("message_received", {}, {"notify_received": False}, False),
        ("message_sent", {}, {"notify_sent": False}, False),
        ("message_status", {"status": "delivered"}, {"notify_delivery": True}, True),
        ("message_status", {"status": "read"}, {"notify_read": False}, False),
        ("message_status", {"status": "played"}, {"notify_read": True}, True),
        ("message_status", {"status": "sent"}, {"notify_read": True, "notify_delivery": True}, False),
        ("qr_received", {}, {}, True),
        ("limit_exceeded", {}, {"enabled": False}, False),
        ("webhook_updated", {}, {"url": None}, False),
    ],
)
def test_filter(event: str, data: dict, flags: dict, expected: bool) -> None:
    settings = dict(
        enabled=True,
        url="http://x",
        notify_received=True,
        notify_sent=True,
        notify_delivery=False,
        notify_read=False,
    )
    settings.update(flags)
    assert wants(event=event, data=data, **settings) is expected


# --- netguard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[64:ff9b::7f00:1]/",
        "http://localhost:8080/",
    ],
)
async def test_check_url_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(UnsafeURLError) as err:
        await check_url(url, allow_private=False)
    assert err.value.reason.startswith("refused:")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http://user:pw@8.8.8.8/", "nonsense"]
)
async def test_check_url_refuses_bad_urls_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        await check_url(url, allow_private=True)


async def stub_resolver(host: str, port: int) -> list[str]:
    table = {
        "evil.example": ["10.0.0.5"],
        "mixed.example": ["8.8.8.8", "192.168.0.1"],
        "ok.example": ["8.8.4.4"],
    }
    if host not in table:
        raise OSError(f"{host} not found")
    return table[host]


async def test_check_url_with_a_stub_resolver() -> None:
    with pytest.raises(UnsafeURLError, match=r"evil\.example resolves to a non-public address"):
        await check_url("https://evil.example/hook", allow_private=False, resolver=stub_resolver)
    with pytest.raises(UnsafeURLError, match=r"192\.168\.0\.1"):
        await check_url("https://mixed.example/hook", allow_private=False, resolver=stub_resolver)
    with pytest.raises(UnsafeURLError, match="does not resolve"):
        await check_url("https://missing.example/hook", allow_private=False, resolver=stub_resolver)
    target = await check_url("https://ok.example/hook", allow_private=False, resolver=stub_resolver)
    assert (target.host, target.port, target.address) == ("ok.example", 443, "8.8.4.4")
    assert address_refusal("8.8.8.8") is None and address_refusal("2001:4860:4860::8888") is None


async def test_guarded_client_connects_to_the_checked_address_and_keeps_the_host_header() -> None:
    receiver = await HttpServer().start()

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "pinned.example" else ["10.9.9.9"]

    try:
        # Guard on: the name resolves to loopback, refused at connect time; nothing arrives.
        async with guarded_client(allow_private=False, resolver=resolver) as client:
            with pytest.raises(UnsafeURLError, match=r"127\.0\.0\.1 is a loopback address"):
                await client.post(f"http://pinned.example:{receiver.port}/hook", content=b"{}")
            with pytest.raises(UnsafeURLError):
                await client.post(f"http://127.0.0.1:{receiver.port}/hook", content=b"{}")
        assert receiver.requests == []
        # Private allowed (development): the connection goes to the resolved address; Host is the name.
        async with guarded_client(allow_private=True, resolver=resolver) as client:
            resp = await client.post(f"http://pinned.example:{receiver.port}/hook", content=b"{}")
        assert resp.status_code == 200
        assert receiver.requests[0].headers["host"] == f"pinned.example:{receiver.port}"
    finally:
        await receiver.stop()


async def test_guarded_client_never_follows_redirects() -> None:
    private = await HttpServer().start()
    redirector = await HttpServer(
        lambda _r, _n: (302, {"Location": f"http://127.0.0.1:{private.port}/x"})
    ).start()
    try:
        async with guarded_client(allow_private=True) as client:
            resp = await client.post(redirector.url(), content=b"{}")
        assert resp.status_code == 302 and private.requests == []
        # Had it been followed, the target itself is refused with the guard on.
        with pytest.raises(UnsafeURLError):
            await check_url(resp.headers["location"], allow_private=False)
    finally:
        await redirector.stop()
        await private.stop()
