"""A webhook receiver on loopback that verifies signatures the way the reference's JavaScript
snippet does (shared by the end-to-end tests, ``tests/demo.py`` and the benchmark).

It is the shared :class:`~tests.support.http.HttpServer` (which answers ``200 {}``) with one more
record per ``POST /<name>``: a :class:`Hook` with its headers, parsed body and whether
``X-Webhook-Signature`` verified with the secret registered for ``<name>``: HMAC-SHA256,
lowercase hex, over the body **re-serialised from the parsed JSON with ``JSON.stringify``
semantics** (compact separators, non-ASCII characters kept, keys in parse order) — not over the
raw bytes, as Express receivers do (contract notes, "Webhook signature compatibility").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.http import HttpServer, Request


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


class WebhookReceiver(HttpServer):
    """``await receiver.start()``; ``receiver.url(name, secret)`` gives a hook URL for one
    instance; ``receiver.hooks(name)`` what arrived there; ``await receiver.wait(...)`` polls."""

    def __init__(self, on_hook: Callable[[Hook], None] | None = None, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.on_hook = on_hook
        self.secrets: dict[str, str] = {}
        self.received: list[Hook] = []

    def url(self, path: str = "hook", secret: str | None = None) -> str:
        if secret is not None:
            self.secrets[path.lstrip("/")] = secret
        return super().url(path)

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

    def record(self, request: Request) -> None:
        if request.method == "POST":
            name = request.path.lstrip("/")
            try:
                body = json.loads(request.body)
            except ValueError:
                body = None
            secret = self.secrets.get(name)
            signature = request.headers.get("x-webhook-signature")
            verified = None if secret is None else verify_signature(body, signature, secret)
            hook = Hook(name, request.headers, request.body, body, verified, request.at)
            self.received.append(hook)
            if self.on_hook is not None:
                self.on_hook(hook)
        super().record(request)
