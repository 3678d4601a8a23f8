"""A real webhook receiver on loopback that verifies signatures the way the reference's
JavaScript snippet does (shared by the end-to-end tests, ``tests/demo.py`` and the benchmark).

The receiver is a small HTTP/1.1 server (asyncio streams, keep-alive) that accepts
``POST /<name>`` and answers 200. Each hook is recorded with its headers, parsed body and
whether ``X-Webhook-Signature`` verified with the secret registered for ``<name>``:
HMAC-SHA256, lowercase hex, over the body **re-serialised from the parsed JSON with
``JSON.stringify`` semantics** (compact separators, non-ASCII characters kept, keys in parse
order) — not over the raw bytes, as Express receivers do (contract notes, "Webhook signature
compatibility").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _js_numbers(value: Any) -> Any:
    """Floats with an integral value print without ``.0`` in JavaScript (``1.0`` → ``1``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def js_stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON-parsed values: compact, non-ASCII kept, keys in order."""
    return json.dumps(_js_numbers(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def verify_signature(parsed_body: Any, signature: str | None, secret: str) -> bool:
    """``verifyWebhookSignature(req.body, signature, secret)`` of the reference, in Python."""
    if not signature:
        return False
    computed = hmac.new(secret.encode(), js_stringify(parsed_body).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), computed.encode())


@dataclass
class Hook:
    """One webhook request as received."""

    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    body: Any
    verified: bool | None  # None when no secret is registered for the path
    received_at: float  # time.monotonic()

    @property
    def id(self) -> str:
        return self.headers.get("x-webhook-id", "")

    @property
    def event(self) -> str:
        return str(self.body.get("event", "")) if isinstance(self.body, dict) else ""

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data") if isinstance(self.body, dict) else None
        return data if isinstance(data, dict) else {}


@dataclass
class WebhookReceiver:
    """``await receiver.start()``; ``receiver.url(name, secret)`` gives a hook URL for one
    instance; ``receiver.hooks(name)`` what arrived there; ``await receiver.wait(...)`` polls."""

    host: str = "127.0.0.1"
    secrets: dict[str, str] = field(default_factory=dict)
    received: list[Hook] = field(default_factory=list)
    on_hook: Callable[[Hook], None] | None = None
    _server: asyncio.Server | None = None
    _port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # keep-alive connections end their handlers
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def url(self, name: str, secret: str | None = None) -> str:
        if secret is not None:
            self.secrets[name] = secret
        return f"http://{self.host}:{self._port}/{name}"

    def hooks(self, name: str | None = None, event: str | None = None) -> list[Hook]:
        return [
            h
            for h in self.received
            if (name is None or h.path == name) and (event is None or h.event == event)
        ]

    def unique(self, name: str | None = None, event: str | None = None) -> list[Hook]:
        """Hooks deduplicated by ``X-Webhook-Id`` (first arrival kept)."""
        seen: set[str] = set()
        out: list[Hook] = []
        for hook in self.hooks(name, event):
            if hook.id not in seen:
                seen.add(hook.id)
                out.append(hook)
        return out

    async def wait(
        self,
        predicate: Callable[[], Any],
        timeout_s: float = 20.0,
        message: str = "webhook",
    ) -> Any:
        """Wait until ``predicate()`` is truthy, woken by each arriving hook; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._changed.clear()
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{message} not received within {timeout_s}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(length) if length else b""
                self._record(method, target, headers, raw)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n{}"
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # (a cancelled handler at shutdown ends quietly)
        finally:
            self._writers.discard(writer)
            writer.close()

    def _record(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> None:
        if method != "POST":
            return
        name = target.split("?", 1)[0].lstrip("/")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        secret = self.secrets.get(name)
        verified = (
            None if secret is None else verify_signature(body, headers.get("x-webhook-signature"), secret)
        )
        hook = Hook(name, headers, raw, body, verified, time.monotonic())
        self.received.append(hook)
        if self.on_hook is not None:
            self.on_hook(hook)
        self._changed.set()
