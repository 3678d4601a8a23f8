"""Fixtures of the stats tests."""

from __future__ import annotations

import pytest

from conftest import AMQP_HOST, VhostFactory


@pytest.fixture(scope="session")
def amqp_url(vhost_factory: VhostFactory) -> str:
    """A vhost of the stats tests' own: ``wa.events.stats`` must hold only the events these tests
    publish (in the session's shared vhost it also collects every other test's events, which a
    stats process started later would count)."""
    return f"amqp://guest:guest@{AMQP_HOST}/{vhost_factory()}"
