"""One real HTTP/1.1 test server on loopback, for every test, benchmark and demo that needs one
(webhook receivers, media servers, redirectors).

``HttpServer`` listens on ``<host>:<free port>`` (asyncio streams, keep-alive; ``Connection:
close`` is honoured). Every request is recorded as a :class:`Request` (monotonic arrival time,
method, target, headers lower-cased, body bytes) before it is answered. The answer comes from, in
this order: the :class:`Response` given for the request's path with :meth:`HttpServer.route` (or
bytes given with :meth:`HttpServer.serve`), then ``handler(request, count)`` (``count``: requests
received so far, this one included), then the default ``200 {}``. A handler returns a
:class:`Response`, an HTTP status, a ``(status, headers)`` pair, or ``None`` to hang until the
client gives up; it may be async.

    async with HttpServer() as server:            # or: server = await HttpServer().start()
        server.serve("/picture.png", PNG, "image/png")
        server.route("/slow", Response(503, delay_s=2))
        url = server.url("/picture.png")
        ...
        await server.wait(lambda: server.requests, message="a request")

The root ``conftest.py`` has ``http_servers``, a fixture that starts servers and stops them after
the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Response:
    """An answer: status, body, extra headers, and how long to wait before sending it."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Request:
    """One request as received."""

    at: float  # time.monotonic() on arrival
    method: str
    target: str  # as in the request line, query included
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


Answer = Response | int | tuple[int, dict[str, str]] | None
Handler = Callable[[Request, int], Answer | Awaitable[Answer]]
DEFAULT = Response(200, b"{}", {"Content-Type": "application/json"})


class HttpServer:
    def __init__(self, handler: Handler | None = None, *, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.routes: dict[str, Response] = {}
        self.requests: list[Request] = []
        self.changed = asyncio.Event()  # set on every request
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, 0, backlog=1024)
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):  # keep-alive connections end their handlers
            writer.close()
        for task in list(self._tasks):  # hanging and delayed answers too
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- configuration and inspection ---------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/hook") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    def route(self, path: str, response: Response) -> str:
        """Answer ``response`` to every request for ``path``; returns its URL."""
        self.routes["/" + path.lstrip("/")] = response
        return self.url(path)

    def serve(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at ``path`` (a media file); returns its URL."""
        return self.route(path, Response(200, data, {"Content-Type": content_type}))

    async def wait(
        self, predicate: Callable[[], Any], timeout_s: float = 20.0, message: str = "request"
    ) -> Any:
        """Wait until ``predicate()`` is truthy, woken by each request; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.changed.clear()
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{message} not received within {timeout_s}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    def record(self, request: Request) -> None:
        """Called for each request before it is answered (subclasses add their own bookkeeping)."""
        self.requests.append(request)
        self.changed.set()

    # -- the protocol -------------------------------------------------------------------------

    async def _answer(self, request: Request) -> Response | None:
        route = self.routes.get(request.path)
        if route is not None:
            return route
        if self.handler is None:
            return DEFAULT
        answer = self.handler(request, len(self.requests))
        if isinstance(answer, Awaitable):
            answer = await answer
        if answer is None or isinstance(answer, Response):
            return answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return Response(status, b"", headers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                request = Request(time.monotonic(), method, target, headers, body)
                self.record(request)
                response = await self._answer(request)
                if response is None:
                    while await reader.read(65536):  # hang until the client gives up
                        pass
                    return
                if response.delay_s:
                    await asyncio.sleep(response.delay_s)
                close = headers.get("connection", "").lower() == "close"
                writer.write(self._encode(response, close, head_only=method == "HEAD"))
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return  # (a cancelled handler at shutdown ends quietly)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    @staticmethod
    def _encode(response: Response, close: bool, head_only: bool) -> bytes:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + response.body
