"""The event envelope, command/query requests and replies (schema version 1).

All timestamps are timezone-aware UTC ``datetime`` values, serialised as ISO 8601.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wa_common.clock import utcnow
from wa_common.ids import new_id
from wa_common.schemas.wire import as_utc

SCHEMA_VERSION = 1

Role = Literal["admin", "user"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        """JSON bytes of this message (UTF-8)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Self:
        """Parse JSON bytes; raises ``pydantic.ValidationError`` on a malformed message."""
        return cls.model_validate_json(raw)


class Caller(_Wire):
    """The authenticated identity a request is made for (set by the gateway, never by clients)."""

    user_id: str
    role: Role = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Event(_Wire):
    """Something that happened, published on ``wa.events`` with routing key ``<type>.<instance>``.

    ``id`` is a ULID, unique and time-sortable: consumers deduplicate on it. ``data`` carries the
    public payload (for webhook events exactly the reference's ``data`` object); ``meta`` carries
    internal facts that must not reach webhook receivers (e.g. media size in bytes for stats).
    """

    v: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id)
    type: str
    instance_id: str | None = None
    user_id: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    _utc = field_validator("occurred_at")(as_utc)

    @property
    def routing_key(self) -> str:
        """``<type>.<instance id>``, or ``<type>.-`` for events about no instance."""
        return f"{self.type}.{self.instance_id or '-'}"


class Request(_Wire):
    """Base of commands and queries: who asks, about what, and until when the answer matters.

    ``deadline`` is absolute UTC; a receiver drops a request whose deadline has passed (the
    caller has given up). ``idempotency_key`` makes a retried request run once.
    """

    v: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id)
    name: str
    caller: Caller | None = None
    instance_id: str | None = None
    deadline: datetime = Field(default_factory=lambda: utcnow() + timedelta(seconds=10))
    idempotency_key: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    _utc = field_validator("deadline")(as_utc)

    def remaining_s(self, now: datetime | None = None) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return (self.deadline - (now or utcnow())).total_seconds()

    def expired(self, now: datetime | None = None) -> bool:
        return self.remaining_s(now) <= 0


class Command(Request):
    """A request that changes state (send, create, logout...), routed to the instance's shard."""

    kind: Literal["command"] = "command"


class Query(Request):
    """A read-only request, served by any replica (competing consumers on ``wa.queries``)."""

    kind: Literal["query"] = "query"


class Reply(_Wire):
    """The answer to a command or query.

    ``status`` follows HTTP semantics (200, 201, 202, 400, 404, 409, 429, 500...) so the gateway
    can relay it; ``error`` is a human-readable message and ``details`` lists field errors as
    ``{"field": ..., "message": ...}``.
    """

    v: int = SCHEMA_VERSION
    ok: bool
    status: int = 200
    data: Any = None
    error: str | None = None
    details: list[dict[str, Any]] | None = None

    @classmethod
    def success(cls, data: Any = None, status: int = 200) -> Reply:
        """A success with ``data``, the response body: a model (an
        :class:`~wa_common.schemas.wire.ApiModel` is dumped to its JSON object here) or plain
        JSON data."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", by_alias=True)
        return cls(ok=True, status=status, data=data)

    @classmethod
    def failure(cls, status: int, error: str, details: list[dict[str, Any]] | None = None) -> Reply:
        """A failure: HTTP ``status``, message ``error``, field ``details``."""
        return cls(ok=False, status=status, error=error, details=details)
