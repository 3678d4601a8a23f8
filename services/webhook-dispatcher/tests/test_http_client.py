"""The lean webhook HTTP client (``wa_webhooks.http_client``) against real loopback servers: the
SSRF guard at connect time, no redirects, keep-alive (and a peer that closed it), bodies of every
framing, headers HTTP cannot carry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from conftest import wait_for
from tests.support.http import Answer, HttpServer, Response
from wa_common.netguard import UnsafeURLError
from wa_webhooks.http_client import HttpError, LeanClient

HEADERS = {"Content-Type": "application/json", "X-Webhook-Id": "abc"}


async def resolver(host: str, port: int) -> list[str]:
    return ["127.0.0.1"] if host == "pinned.example" else ["10.9.9.9"]


async def test_connects_to_the_checked_address_and_keeps_the_host_header() -> None:
    receiver = await HttpServer().start()
    try:
        guarded = LeanClient(allow_private=False, resolver=resolver)
        with pytest.raises(UnsafeURLError, match=r"127\.0\.0\.1 is a loopback address"):
            await guarded.post(f"http://pinned.example:{receiver.port}/hook", b"{}", HEADERS)
        with pytest.raises(UnsafeURLError, match="refused:"):
            await guarded.post(f"http://[::ffff:127.0.0.1]:{receiver.port}/hook", b"{}", HEADERS)
        for bad in ("ftp://example.com/", "http://user:pw@8.8.8.8/", "nonsense"):
            with pytest.raises(UnsafeURLError):
                await guarded.post(bad, b"{}", HEADERS)
        assert receiver.requests == []
        client = LeanClient(allow_private=True, resolver=resolver)
        url = f"http://pinned.example:{receiver.port}/hook?a=1&b=%C3%A4"
        assert await client.post(url, b'{"x":1}', HEADERS) == 200
        request = receiver.requests[0]
        assert request.headers["host"] == f"pinned.example:{receiver.port}"
        assert (request.method, request.target, request.body) == ("POST", "/hook?a=1&b=%C3%A4", b'{"x":1}')
        assert (
            request.headers["content-type"] == "application/json" and request.headers["x-webhook-id"] == "abc"
        )
        await client.aclose()
    finally:
        await receiver.stop()


async def test_never_follows_redirects_and_reports_every_status() -> None:
    private = await HttpServer().start()
    answers: Iterator[Answer] = iter(
        [(302, {"Location": private.url()}), 503, 204, Response(200, b"x" * 100_000)]
    )
    server = await HttpServer(lambda _r, _n: next(answers)).start()
    client = LeanClient(allow_private=True)
    try:
        assert [await client.post(server.url(), b"{}", HEADERS) for _ in range(4)] == [302, 503, 204, 200]
        assert private.requests == [] and len(server.requests) == 4
    finally:
        await client.aclose()
        await server.stop()
        await private.stop()


async def test_a_header_http_cannot_carry_is_never_sent() -> None:
    server = await HttpServer().start()
    client = LeanClient(allow_private=True)
    try:
        for headers in ({"X-A": "1\r\nX-Evil: 1"}, {"X-A": "caf\u00e9"}, {"X-A\nB": "1"}):
            with pytest.raises(HttpError, match="could not be written"):
                await client.post(server.url(), b"{}", headers)
        assert server.requests == []
    finally:
        await server.stop()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Script], Awaitable[tuple[str, list[int]]]]]:
    """``url, connections = await raw_server(script)``: a loopback server whose every connection
    runs ``script(reader, writer, n)`` (``n``: the connection's number); ``connections`` gets
    ``n`` when connection ``n`` is accepted and ``-n`` when the server has closed it."""
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> tuple[str, list[int]]:
        accepted: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = len([a for a in accepted if a > 0]) + 1
            accepted.append(n)
            try:
                await script(reader, writer, n)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                accepted.append(-n)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook", accepted

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
        if k.lower() == b"content-length"
    )
    return await reader.readexactly(length)


async def test_keep_alive_chunked_and_interim_answers_reuse_one_connection(raw_server) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await read_request(reader)
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    url, connections = await raw_server(script)
    client = LeanClient(allow_private=True)
    try:
        assert [await client.post(url, b"{}", HEADERS) for _ in range(3)] == [200, 201, 202]
        assert connections == [1]
    finally:
        await client.aclose()


async def test_a_connection_the_peer_closed_or_ended_is_not_reused(raw_server) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # answers, then drops the idle connection without saying so
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            return
        if n == 2:  # a body delimited by the end of the connection
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            return
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    url, connections = await raw_server(script)
    client = LeanClient(allow_private=True)
    try:
        assert await client.post(url, b"{}", HEADERS) == 200
        await wait_for(lambda: -1 in connections, message="the server closed the first connection")
        assert await client.post(url, b"{}", HEADERS) == 200
        assert await client.post(url, b"{}", HEADERS) == 204
        assert [n for n in connections if n > 0] == [1, 2, 3]
    finally:
        await client.aclose()


async def test_an_answer_that_is_not_http_is_an_error(raw_server) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    url, _ = await raw_server(script)
    with pytest.raises(HttpError, match="could not be read"):
        await LeanClient(allow_private=True).post(url, b"{}", HEADERS)
