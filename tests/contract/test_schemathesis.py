"""Property-based contract check of ``/openapi.json`` with schemathesis, against the running
gateway (and the services behind it): no 5xx, every status code, content type, header and
response body as documented.

Auth and user administration routes (``/api/auth/*``, ``/api/users`` except limits) are the
auth service's and are left out: fuzzing them would rotate the fuzzing user's key or password
mid-run. Examples per operation are bounded (``FUZZ_EXAMPLES``, default 6) so the run stays
well under a minute.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import Cluster

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
async def fuzz_headers(cluster: Cluster) -> dict[str, str]:
    """An admin created for the fuzzing run (so admin routes are exercised too)."""
    login = await cluster.login()
    user = await cluster.create_user(login["token"], role="admin")
    return {"x-api-key": user["apiKey"]}


EXCLUDED = re.compile(r"^/api/(auth/.*|users|users/\{[^}]+\}(/api-key|/ip-allowlist)?)$")


def test_openapi_contract(cluster: Cluster, fuzz_headers: dict[str, str]) -> None:
    """Every operation of ``/openapi.json``: ``FUZZ_EXAMPLES`` generated requests each (positive
    and negative data), every response validated. (schemathesis' pytest plugin does not work with
    pytest 9, so the operations are driven with hypothesis directly.)"""
    schema = schemathesis.openapi.from_url(f"{cluster.gateway_url}/openapi.json")
    failures: list[str] = []
    tested = calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        if EXCLUDED.match(operation.path):
            continue
        tested += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=fuzz_headers, checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {exc}")
    assert tested >= 40 and calls >= 2 * tested
    assert not failures, "\n\n".join(failures)
