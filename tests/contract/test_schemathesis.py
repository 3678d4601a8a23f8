"""Property-based contract check of the whole ``/openapi.json`` with schemathesis, against the
running gateway (and the services behind it), as a user and as an admin:

- with valid data (positive mode): no 5xx, every status code, content type, header and response
  body as documented;
- with invalid data (negative mode: wrong types, out-of-range numbers, over-long strings, missing
  fields...): no 5xx at all — the gateway judges such input itself and answers 4xx.

Every operation except the live-event stream (``STREAMS``). Account routes (``/api/auth/*``,
``/api/users`` and below, except limits) run with a throwaway user of the role, made for that
operation: they may change its password or rotate its key. Examples per operation and mode are
bounded (``FUZZ_EXAMPLES``, default 6) so the run stays well under a minute.
"""

from __future__ import annotations

import asyncio
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
from schemathesis.generation import GenerationMode

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


# Server-sent event streams answer 200 and stay open: a request/response fuzzer would wait for
# its timeout on every example (tests/e2e/test_live_stream.py covers the stream).
STREAMS = frozenset({"/api/events/stream"})
ACCOUNT_ROUTES = re.compile(r"^/api/(auth/.*|users|users/\{[^}]+\}(/api-key|/ip-allowlist)?)$")


async def _api_key(cluster: Cluster, role: str) -> dict[str, str]:
    login = await cluster.login()
    user = await cluster.create_user(login["token"], role=role)
    return {"x-api-key": user["apiKey"]}


@pytest.mark.parametrize("role", ["user", "admin"])
async def test_openapi_contract(cluster: Cluster, role: str) -> None:
    """Every operation of ``/openapi.json``, in both modes: ``FUZZ_EXAMPLES`` generated requests
    each, every response checked. (schemathesis' pytest plugin does not work with pytest 9, so
    the operations are driven with hypothesis directly, in a thread: the cluster's helpers are
    async.)"""
    headers = await _api_key(cluster, role)
    schema = schemathesis.openapi.from_url(f"{cluster.gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    account_headers = {
        op.label: await _api_key(cluster, role) for op in operations if ACCOUNT_ROUTES.match(op.path)
    }
    failures: list[str] = []
    calls = 0

    def run(operation: Any, mode: GenerationMode) -> None:
        nonlocal calls
        checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]
        auth = account_headers.get(operation.label, headers)

        @given(case=operation.as_strategy(generation_mode=mode))
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
            case.call_and_validate(headers=auth, checks=checks, timeout=30)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # one failing operation must not hide the others
            failures.append(f"{operation.label} ({mode.value}): {exc}")

    def run_all() -> None:
        for operation in operations:
            if operation.path in STREAMS:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run(operation, mode)

    await asyncio.to_thread(run_all)
    assert len(operations) >= 55 and len(account_headers) >= 10
    assert calls >= 3 * len(operations)
    assert not failures, "\n\n".join(failures)
