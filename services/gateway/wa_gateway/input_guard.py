"""The gateway's edge check of every request's input, before any route logic or relay.

Route models bound their own fields (lengths, ranges); this dependency adds the rules that hold
for *every* value a client sends, on every route, including bodies the gateway relays unparsed
(``/api/auth/*``, ``/api/users/*``):

- no path parameter, query parameter (at most :data:`MAX_QUERY_VALUE` characters),
  ``Idempotency-Key`` or form field contains a NUL character or a lone surrogate;
- a JSON body follows ``wa_common.schemas.text.json_problems`` (storable text, keys included;
  bounded strings and nesting; integers within +-(2^53 - 1)).

A violation answers 400 with ``details[].field`` naming the offending value (``body.x.y``
becomes ``x.y``, as FastAPI's own validation errors do). The parsed JSON body is the one FastAPI
already cached on the request (no second parse).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from wa_common.schemas.text import MAX_STRING, json_problems, text_problem
from wa_gateway.errors import ApiError

MAX_QUERY_VALUE = 2048


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid request: {field}: {message}", [{"field": field, "message": message}])


def _check_text(field: str, value: str, max_length: int) -> None:
    problem = text_problem(value, max_length)
    if problem:
        raise _refuse(field, problem)


def check_json(value: Any) -> None:
    """Raise a 400 :class:`ApiError` naming the first value of a parsed JSON document that breaks
    the rules (``wa_common.schemas.text.json_problems``); the root is named ``body``."""
    for field, message in json_problems(value):
        raise _refuse(field or "body", message)


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
