"""A lean HTTP/1.1 client for webhook ``POST``s, with the SSRF guard of ``wa_common.netguard``.

Why not ``httpx``: per attempt it parses the URL again, builds request and header models, scans
its whole connection pool and goes through anyio; the dispatcher only ever sends one small
``POST`` and reads a status. This client keeps what matters:

- the URL is checked as :func:`wa_common.netguard.check_url` does (http/https, a host, no
  credentials) and every new connection goes to an address :func:`~wa_common.netguard.resolve_checked`
  resolved and checked just before (no second DNS lookup, no DNS-rebinding window); the ``Host``
  header and TLS SNI/certificate verification (certifi's CA bundle, as httpx) use the name;
- redirects are never followed (a 3xx is an answer like any other), no proxies;
- keep-alive per ``scheme://host:port``: a connection goes back to the pool only when its
  response was read whole (``Content-Length`` or chunked, at most ``max_body`` bytes) and neither
  side asked to close; idle ones are dropped after ``keepalive_s``; a request that finds its
  pooled connection closed by the peer before any answer byte is sent once more on a new one.

Failures: :class:`~wa_common.netguard.UnsafeURLError` (refused URL or address),
:class:`HttpError` (connect, protocol or header error; its text never holds the URL or a header
value), the resolver's own exceptions, ``TimeoutError`` from the caller's timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import certifi
import httpx

from wa_common.netguard import Resolver, UnsafeURLError, resolve_checked

_BAD_VALUE = str.maketrans("", "", "\r\n\x00")


class HttpError(Exception):
    """The request could not be made or its answer not read (text safe to show)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: ``host`` to resolve and for TLS (IDNA, no brackets), ``port``, the ``Host``
    header value, the request target (path and query, encoded) and the pool ``key``."""

    https: bool
    host: str
    port: int
    host_header: str
    path: str
    key: str


@lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """The checked target of ``url``; raises :class:`UnsafeURLError` (scheme not http/https, no
    host, credentials, malformed)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURLError(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURLError(f"URL scheme must be http or https, not {parsed.scheme or 'none'!r}")
    if not parsed.host:
        raise UnsafeURLError("URL has no host")
    if parsed.userinfo:
        raise UnsafeURLError("URL must not contain credentials")
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 80)
    host = parsed.raw_host.decode("ascii")
    return Target(
        https,
        host,
        port,
        parsed.netloc.decode("ascii"),
        parsed.raw_path.decode("ascii") or "/",
        f"{parsed.scheme}://{host}:{port}",
    )


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, now: float, keepalive_s: float) -> bool:
        return (
            not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < keepalive_s
        )

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """``await client.post(url, body, headers) -> status``; see the module docstring.

    ``allow_private`` turns the address checks off (development, tests); ``resolver`` replaces
    DNS (tests); ``max_idle`` bounds idle connections per endpoint. Close with :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None = None,
        max_idle: int = 32,
        keepalive_s: float = 5.0,
        max_body: int = 64 * 1024,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._max_idle = max_idle
        self._keepalive_s = keepalive_s
        self._max_body = max_body
        self._idle: defaultdict[str, list[_Connection]] = defaultdict(list)
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """Send ``POST url`` with ``body`` and ``headers``; returns the final status (1xx
        interim answers skipped). Raises what the module docstring lists."""
        target = parse_target(url)
        request = self._head(target, headers, len(body)) + body
        for _ in range(2):
            conn, reused = self._pooled(target.key), True
            if conn is None:
                conn, reused = await self._connect(target), False
            answered = False
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                first = await conn.reader.readuntil(b"\r\n\r\n")
                answered = True
                status, keep = await self._response(conn.reader, first)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, ConnectionError | asyncio.IncompleteReadError) and reused and not answered:
                    continue  # the peer closed the idle connection: once more on a new one
                if isinstance(exc, OSError | EOFError | asyncio.LimitOverrunError | ValueError):
                    raise HttpError(f"{type(exc).__name__}: the answer could not be read") from exc
                raise
            if keep:
                conn.idle_since = time.monotonic()
                idle = self._idle[target.key]
                if len(idle) < self._max_idle:
                    idle.append(conn)
                else:
                    conn.close()
            else:
                conn.close()
            return status
        raise HttpError("RemoteProtocolError: the server closed the connection without answering")

    async def aclose(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    # --- connections ----------------------------------------------------------------------------

    def _pooled(self, key: str) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._keepalive_s):
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target) -> _Connection:
        addresses = await resolve_checked(
            target.host, target.port, allow_private=self._allow_private, resolver=self._resolver
        )
        context = self._context() if target.https else None
        last: Exception | None = None
        for ip in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    ip,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                    limit=self._max_body,
                )
                return _Connection(reader, writer)
            except (OSError, ssl.SSLError) as exc:
                last = exc
        raise HttpError(f"ConnectError: {type(last).__name__}: {last}")

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    # --- the wire -------------------------------------------------------------------------------

    @staticmethod
    def _head(target: Target, headers: Mapping[str, str], length: int) -> bytes:
        """The request line and headers; raises :class:`HttpError` for a header HTTP cannot carry."""
        lines = [
            f"POST {target.path} HTTP/1.1",
            f"Host: {target.host_header}",
            "Accept: */*",
            f"Content-Length: {length}",
        ]
        for name, value in headers.items():
            if value.translate(_BAD_VALUE) != value or name.translate(_BAD_VALUE) != name or ":" in name:
                raise HttpError("the request could not be written (a header HTTP cannot carry)")
            lines.append(f"{name}: {value}")
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        except UnicodeEncodeError as exc:
            raise HttpError("the request could not be written (non-ASCII header)") from exc

    async def _response(self, reader: asyncio.StreamReader, first: bytes) -> tuple[int, bool]:
        """Read one answer whose head is ``first``: (status, whether the connection can be reused)."""
        head = first
        while True:
            version, status, fields = _parse_head(head)
            if not 100 <= status < 200:
                break
            head = await reader.readuntil(b"\r\n\r\n")  # an interim answer: the final one follows
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        encoding = fields.get("transfer-encoding")
        length = fields.get("content-length")
        if encoding is not None:
            keep = keep and encoding.strip().lower() == "chunked" and await self._skip_chunks(reader)
        elif length is not None:
            if length.strip().isdigit() and int(length) <= self._max_body:
                await reader.readexactly(int(length))
            else:
                keep = False
        elif status not in (204, 304):
            keep = False  # the body ends when the connection does: not read, not reused
        return status, keep

    async def _skip_chunks(self, reader: asyncio.StreamReader) -> bool:
        """Read a chunked body up to ``max_body``; False when it was longer (not read whole)."""
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return True
            total += size
            if total > self._max_body:
                return False
            await reader.readexactly(size + 2)


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """(version, status, lower-cased header fields) of a response head; raises ``ValueError``."""
    lines = head.decode("latin-1").split("\r\n")
    version, code = lines[0].split(" ", 2)[:2]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError("not an HTTP/1.x status line")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            fields[name.strip().lower()] = value.strip()
    return version, int(code), fields
