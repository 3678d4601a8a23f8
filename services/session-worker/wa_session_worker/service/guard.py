"""The worker's own check of every command and query before a handler runs (its edge).

The gateway validates client input too, but the worker must be safe on its own: a value the
store cannot hold must be answered 400 at once, not fail a store write (which used to redeliver
the command up to the delivery limit and dead-letter it while the caller waited for its deadline).

Two layers, both shared with the gateway (one definition of each rule):

- here, before any handler: the envelope (request id, caller, idempotency key, instance id) fits
  its column, and the whole payload follows ``wa_common.schemas.text.json_problems`` (storable
  text, keys included; bounded strings, lists and nesting; integers within +-(2^53 - 1));
- then, before the handler: the payload model of ``wa_common.schemas.session`` declared with
  the request's route bounds each field to its column and applies the webhook header rules
  (``WebhookHeaders``); the request router (``wa_common.bus.router``) answers its
  ``ValidationError`` 400.

A violation answers 400 with ``details`` naming each field; messages never quote the offending
value (it may be a secret). Recipients and chat ids are checked where they are parsed
(:func:`wa_session_worker.service.views.to_jid`). Text the worker did not
receive from a caller (WhatsApp's) fit the store with ``wa_common.schemas.text.storable``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column

from wa_common.schemas import Reply, Request
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.text import json_problems, text_problem
from wa_session_worker import models as m


def column_length(column: Column[Any]) -> int:
    """The declared length of a ``String(n)`` column."""
    length = getattr(column.type, "length", None)
    assert isinstance(length, int), f"{column} has no length"
    return length


MAX_DEPTH = 8
MAX_ITEMS = 100  # items of a list (event and action filters)
MAX_PROBLEMS = 20
# An uploaded file (send-file), bounded when decoded by WORKER_MEDIA_MAX_BYTES.
UNBOUNDED = frozenset({"dataBase64"})

# Envelope (set by the gateway).
MAX_REQUEST_ID = 64  # "request:<id>" is a send's default idempotency key (200 characters)
MAX_INSTANCE_ID = column_length(m.instances.c.id)  # 40
MAX_USER_ID = column_length(m.instances.c.user_id)  # 64
MAX_IDEMPOTENCY_KEY = column_length(m.idempotency.c.key)  # 200
# Text from WhatsApp cut to its column (storable()).
MAX_CONTACT_NAME = column_length(m.contacts.c.name)  # 256 (push_name too)
MAX_MIMETYPE = column_length(m.messages.c.mime_type)  # 128
MAX_PUSH_NAME = column_length(m.instances.c.push_name)  # 256 (the linked account's own)


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append({"field": field or "payload", "message": message})

    def __bool__(self) -> bool:
        return bool(self.items)


def _text(problems: _Problems, field: str, value: str, limit: int) -> None:
    problem = text_problem(value, limit)
    if problem is not None:
        problems.add(field, problem)


def check_request(request: Request) -> Reply | None:
    """A 400 (or 404) failure reply when ``request`` breaks the rules above, else ``None``.

    An instance id longer than any stored one answers 404 (no such instance can exist), except
    for a create, whose id the gateway chose.
    """
    problems = _Problems()
    _text(problems, "id", request.id, MAX_REQUEST_ID)
    if request.caller is not None:
        _text(problems, "caller.userId", request.caller.user_id, MAX_USER_ID)
    if request.idempotency_key is not None:
        _text(problems, "idempotencyKey", request.idempotency_key, MAX_IDEMPOTENCY_KEY)
    if request.instance_id is not None:
        if text_problem(request.instance_id) is not None:
            _text(problems, "instanceId", request.instance_id, MAX_INSTANCE_ID)
        elif len(request.instance_id) > MAX_INSTANCE_ID:
            if request.name != C.CREATE_INSTANCE:
                return Reply.failure(404, "Instance not found")
            problems.add("instanceId", f"at most {MAX_INSTANCE_ID} characters")
    documents = json_problems(request.payload, max_items=MAX_ITEMS, max_depth=MAX_DEPTH, unbounded=UNBOUNDED)
    for field, message in documents:
        problems.add(field, message)
    if not problems:
        return None
    first = problems.items[0]
    return Reply.failure(400, f"Invalid request: {first['field']}: {first['message']}", problems.items)
