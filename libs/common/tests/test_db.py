from __future__ import annotations

import pytest

from wa_common.db import async_url, provider_of, redact_url, store_status


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:s3cret@db.example:5432/wa", "postgresql://db.example:5432/wa"),
        ("postgresql://postgres@127.0.0.1/wa", "postgresql://127.0.0.1/wa"),
        ("sqlite:///data/auth.db", "sqlite:///data/auth.db"),
    ],
)
def test_redact_url_removes_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_store_status() -> None:
    assert store_status("postgresql://u:pw@h/db") == {"provider": "postgresql", "url": "postgresql://h/db"}
    assert provider_of("sqlite:///x.db") == "sqlite"


def test_async_url_maps_drivers() -> None:
    assert async_url("postgresql://h/db").drivername == "postgresql+asyncpg"
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://h/db")
