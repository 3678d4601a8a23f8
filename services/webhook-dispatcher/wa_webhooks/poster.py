"""The attempts' HTTP client on httpx: ``POST`` through :func:`wa_common.netguard.guarded_client`
(every connection goes to an address the SSRF check approved; no redirects, no proxies from the
environment), keep-alive per host.

httpx with ``sniffio`` installed (without it httpcore's per-request lookup is a failed import
that scans ``sys.path``). A hand-written HTTP/1.1 client was measured against it during issue 15
(``bench.send_cost``, 20 instances, 50 clients): 2.7-3.7 ms of dispatcher CPU per send against
5.5 ms; httpx stays (a maintained client beats our own for TLS, proxies-off, and protocol edge
cases), see the issue's closing note.
"""

from __future__ import annotations

import httpx

from wa_common.netguard import Resolver, guarded_client


class HttpError(Exception):
    """The request could not be made or its answer not read (text safe to show)."""


MAX_RESPONSE_READ = 64 * 1024
"""Bytes of an answer read so its connection can be reused; a longer one closes it (B)."""


class GuardedPoster:
    """``await poster.post(url, body, headers)`` → the answer's status code. Raises
    :class:`TimeoutError` (httpx timeouts), :class:`HttpError` (text safe to show: never the
    request line or a header value) and :class:`wa_common.netguard.UnsafeURLError`."""

    def __init__(
        self, *, allow_private: bool, timeout_s: float, max_connections: int, resolver: Resolver | None = None
    ):
        self._client = guarded_client(
            allow_private=allow_private,
            timeout=timeout_s,
            resolver=resolver,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=min(max_connections, 200)
            ),
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                length = resp.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) <= MAX_RESPONSE_READ:
                    await resp.aread()  # lets the connection be reused
                return resp.status_code
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.LocalProtocolError as exc:
            # Its text quotes the offending request line or header, value included.
            raise HttpError(f"the request could not be written ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
