"""``wa_webhooks.service`` (no broker, no database): canonical JSON, the body and its timestamp,
signatures, headers, error texts, the event filter."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest

from wa_common.schemas.wire import iso_ms
from wa_webhooks.service import (
    REDACTED,
    InvalidHeader,
    canonical_json,
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
    assert iso_ms(when) == "2023-01-01T12:00:00.123Z"
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
    base = {"enabled": True, "url": "http://x", "notify_received": True, "notify_sent": True}
    settings: dict[str, Any] = base | {"notify_delivery": False, "notify_read": False} | flags
    assert wants(event=event, data=data, **settings) is expected
