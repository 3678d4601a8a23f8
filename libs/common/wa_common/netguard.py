"""SSRF guard for outgoing HTTP to customer-supplied URLs (webhooks, media downloads).

A URL is *safe* when its scheme is ``http``/``https`` and every address its host resolves to is
a public unicast address. Refused: loopback, private (RFC 1918, RFC 4193 ``fc00::/7``), link-local
(``169.254/16`` — which holds the cloud metadata endpoint ``169.254.169.254`` — and ``fe80::/10``),
carrier-grade NAT (``100.64/10``), multicast, reserved, unspecified, documentation/benchmark
ranges, and the same addresses written as IPv4-mapped (``::ffff:127.0.0.1``), IPv4-compatible,
6to4 or NAT64 (``64:ff9b::/96``) IPv6 addresses. The classification is Python's ``ipaddress``
``is_global`` (IANA special-purpose registries, RFC 6890) plus the explicit checks above.

API:

- :func:`check_url` ``(url, *, allow_private, resolver=None) -> ResolvedTarget`` — validate and
  resolve once (for a ``400`` that says why, e.g. the gateway on instance create/update); raises
  :class:`UnsafeURLError` whose ``reason`` is a human-readable sentence.
- :func:`guarded_client` / :class:`GuardedTransport` — an ``httpx`` client/transport that checks
  the host **at connect time** and connects to exactly the address it checked (no second DNS
  lookup, so no DNS-rebinding window), while the URL keeps its host name, so the ``Host`` header
  and TLS SNI/certificate verification are unchanged. Redirects are never followed by
  :func:`guarded_client` (``follow_redirects=False``), and proxies from the environment are
  ignored (``trust_env=False``). A refused connection raises :class:`UnsafeURLError` out of
  ``client.request``/``client.send``.

``allow_private=True`` turns the address checks off (scheme and host checks stay): for
development and tests only (``make run``'s embedded profile).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async (host, port) -> [ip, ...]``: a DNS resolver (the default uses ``getaddrinfo``)."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}


class UnsafeURLError(ValueError):
    """The URL may not be fetched; ``reason`` says why (safe to show to the API caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ResolvedTarget:
    """A checked URL: ``host`` as written (no brackets), ``port``, and the checked addresses.

    ``addresses`` are the IPs (strings) the host resolved to, in resolver order, every one of
    them allowed; ``address`` is the first, the one a guarded connection uses.
    """

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


def address_refusal(ip: str | IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or ``None`` if it is one."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return f"{addr} is a scoped (link-local) address"
        embedded: ipaddress.IPv4Address | None = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and (addr in _NAT64 or addr in _NAT64_LOCAL):
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is None and int(addr) >> 32 == 0 and int(addr) > 1:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)  # IPv4-compatible ::a.b.c.d
        if embedded is not None:
            inner = address_refusal(embedded)
            return f"{addr} embeds {embedded}: {inner}" if inner else None
    if addr in _METADATA:
        return f"{addr} is a cloud metadata address"
    if addr.is_loopback:
        return f"{addr} is a loopback address"
    if addr.is_link_local:
        return f"{addr} is a link-local address"
    if addr.is_unspecified:
        return f"{addr} is the unspecified address"
    if addr.is_multicast:
        return f"{addr} is a multicast address"
    if addr.is_private:
        return f"{addr} is a private address"
    if addr.is_reserved or not addr.is_global:
        return f"{addr} is not a public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver (``getaddrinfo``, TCP); raises ``OSError``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in seen:
            seen.append(ip)
    return seen


async def resolve_checked(
    host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None
) -> tuple[str, ...]:
    """Resolve ``host`` and check every address; returns them or raises :class:`UnsafeURLError`.

    All addresses must pass (a name with one public and one private address is refused: a
    client could otherwise be steered to the private one).
    """
    host = host.strip("[]")
    if not host:
        raise UnsafeURLError("URL has no host")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: Sequence[str] = [str(literal)]
    else:
        try:
            addresses = await (resolver or system_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeURLError(f"host {host!r} does not resolve: {exc}") from exc
        if not addresses:
            raise UnsafeURLError(f"host {host!r} does not resolve")
    if not allow_private:
        for ip in addresses:
            why = address_refusal(ip)
            if why is not None:
                if literal is not None:
                    raise UnsafeURLError(f"refused: {why}")
                raise UnsafeURLError(f"refused: {host} resolves to a non-public address: {why}")
    return tuple(addresses)


def _parse(url: str | httpx.URL) -> tuple[httpx.URL, str, int]:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURLError(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURLError(f"URL scheme must be http or https, not {parsed.scheme or 'none'!r}")
    if not parsed.host:
        raise UnsafeURLError("URL has no host")
    if parsed.userinfo:
        raise UnsafeURLError("URL must not contain credentials")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed, parsed.host, port


async def check_url(
    url: str | httpx.URL, *, allow_private: bool, resolver: Resolver | None = None
) -> ResolvedTarget:
    """Check that ``url`` may be fetched; returns the resolved, checked target.

    Raises :class:`UnsafeURLError` for a malformed URL, a scheme other than http/https,
    credentials in the URL, a host that does not resolve, or (unless ``allow_private``) any
    resolved address that is not public.
    """
    parsed, host, port = _parse(url)
    addresses = await resolve_checked(host, port, allow_private=allow_private, resolver=resolver)
    return ResolvedTarget(str(parsed), parsed.scheme, host, port, addresses)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host at connect time, then connects to the checked address."""

    def __init__(self, *, allow_private: bool, resolver: Resolver | None) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(
            host, port, allow_private=self._allow_private, resolver=self._resolver
        )
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An ``httpx`` transport whose connections go only to checked addresses (see module doc).

    ``limits`` bounds the pool (``max_connections`` across all hosts). The scheme is checked per
    request; the address at connect time (pooled keep-alive connections were checked when made).
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None = None,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        verify: bool = True,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ssl_context = self._pool._ssl_context
        # httpx 0.28 builds its httpcore pool without a network backend option; rebuild it with
        # the guarded backend (same parameters as httpx's own construction).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(allow_private=allow_private, resolver=resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _parse(request.url)
        return await super().handle_async_request(request)


def guarded_client(
    *,
    allow_private: bool,
    timeout: float | httpx.Timeout = 10.0,
    resolver: Resolver | None = None,
    limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on :class:`GuardedTransport`: no redirects, no env proxies.

    ``timeout`` in seconds (per request phase, httpx semantics). Close it with ``aclose()``.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private, resolver=resolver, limits=limits),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers=headers,
    )
