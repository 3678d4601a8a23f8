"""The SSRF guard every attempt goes through (``wa_common.netguard``; no broker, no database):
refused addresses, the pinned connection, no redirects."""

from __future__ import annotations

import pytest

from tests.support.http import HttpServer
from wa_common.netguard import UnsafeURLError, address_refusal, check_url, guarded_client


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
