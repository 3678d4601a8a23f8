"""The gateway's edge check of every request's input, before any route logic or relay.

Route models bound their own fields (lengths, ranges); this dependency adds the rules that hold
for *every* value a client sends, on every route, including bodies the gateway relays unparsed
(``/api/auth/*``, ``/api/users/*``):

- no string (path parameter, query parameter, ``Idempotency-Key``, JSON string or object key,
  form field) contains a NUL character or a lone surrogate (``wa_common.schemas.text``);
- JSON strings are at most :data:`MAX_STRING` characters, query values :data:`MAX_QUERY_VALUE`;
- JSON integers lie within +-(2^53 - 1) (:data:`MAX_INT`: what every JSON client represents
  exactly, and what every store column here holds);
- JSON nesting is at most :data:`MAX_DEPTH` levels.

A violation answers 400 with ``details[].field`` naming the offending value (``body.x.y``
becomes ``x.y``, as FastAPI's own validation errors do). The parsed JSON body is the one FastAPI
already cached on the request (no second parse).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from wa_common.schemas.text import text_problem
from wa_gateway.errors import ApiError

MAX_STRING = 65_536
MAX_QUERY_VALUE = 2048
MAX_INT = 2**53 - 1
MAX_DEPTH = 32


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid request: {field}: {message}", [{"field": field, "message": message}])


def _check_text(field: str, value: str, max_length: int) -> None:
    problem = text_problem(value)
    if problem:
        raise _refuse(field, problem)
    if len(value) > max_length:
        raise _refuse(field, f"at most {max_length} characters")


def check_json(value: Any, field: str = "", depth: int = 0) -> None:
    """Raise a 400 :class:`ApiError` for the first value of a parsed JSON document that breaks
    the rules above; ``field`` is the dotted path of ``value`` (empty at the root)."""
    if depth > MAX_DEPTH:
        raise _refuse(field or "body", f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        _check_text(field or "body", value, MAX_STRING)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise _refuse(field or "body", f"numbers must lie between -{MAX_INT} and {MAX_INT}")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{field}.{key}" if field else str(key)
            problem = text_problem(str(key))
            if problem:
                raise _refuse(field or "body", f"a key {problem}")
            check_json(item, name, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{field}.{index}" if field else str(index), depth + 1)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def guard_input(request: Request) -> None:
    """FastAPI dependency (installed on every route): 400 for input no route may accept."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            _check_text(name, value, MAX_QUERY_VALUE)
    for name, value in request.query_params.multi_items():
        _check_text(name, value, MAX_QUERY_VALUE)
    key = request.headers.get("idempotency-key")
    if key is not None:
        _check_text("Idempotency-Key", key, 200)
    content_type = request.headers.get("content-type", "")
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE") and not content_type:
        return
    if _is_json(content_type):
        try:
            body = await request.json()
        except ValueError:
            return  # not JSON: the route's own body parsing answers (or ignores it)
        check_json(body)
    elif content_type.lower().startswith("multipart/form-data"):
        form = await request.form()
        for name, value in form.multi_items():
            if isinstance(value, str):
                _check_text(name, value, MAX_STRING)
