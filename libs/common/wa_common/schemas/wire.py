"""The base of every JSON body the services exchange with clients: one model, one time format.

- :class:`ApiModel`: fields are snake_case in Python and camelCase on the wire (pydantic's
  ``to_camel`` alias generator; a field whose wire name is a Python keyword, such as ``from``,
  declares it with ``Field(alias=...)``). Undeclared fields are refused (``extra="forbid"``), so
  a reply carrying a field its model does not declare fails where it is built or validated.
- :data:`UtcDateTime`: an aware UTC ``datetime`` in code; on the wire ISO 8601 with milliseconds
  and ``Z`` (``2023-01-01T00:00:00.000Z``), the shape ``spec/api-reference.md`` shows. A naive
  value is taken as UTC.
- :class:`Pagination`: the ``pagination`` object of every paged list (reference: ``total``,
  ``limit``, ``skip``, ``hasMore``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC (a naive value is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_ms(value: datetime) -> str:
    """``2023-01-01T00:00:00.000Z``: ISO 8601, UTC, milliseconds (truncated), ``Z``."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_or_none(value: datetime | None) -> str | None:
    """:func:`iso_ms`, with ``None`` kept."""
    return iso_ms(value) if value is not None else None


UtcDateTime = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(iso_ms, return_type=str, when_used="json"),
]
"""Aware UTC in code, ``2023-01-01T00:00:00.000Z`` in JSON."""


class ApiModel(BaseModel):
    """A JSON body: camelCase on the wire, snake_case in code, no undeclared field."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def dump(self) -> dict[str, Any]:
        """The JSON object of this body (camelCase keys, times as ISO 8601 strings)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def load(cls, data: Any) -> Self:
        """Validate a JSON object (camelCase keys) into this model; raises ``ValidationError``."""
        return cls.model_validate(data)


class FieldError(ApiModel):
    """One refused field of a request: ``{"field": "phone", "message": "..."}``."""

    field: str = Field(description="dotted path of the offending field, e.g. `phone` or `limit`")
    message: str


# Where FastAPI says a request value came from: the first part of its error locations.
REQUEST_PARTS = frozenset({"body", "query", "path", "header", "form", "cookie"})


def field_path(loc: Iterable[Any], *, root: str = "payload") -> str:
    """The dotted field of a pydantic/FastAPI error location (``("body", "a", 0)`` → ``a.0``):
    a leading request part is dropped; ``root`` names the whole value (an empty location)."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in REQUEST_PARTS:
        parts = parts[1:]
    return ".".join(parts) or root


def field_errors(errors: Iterable[Any], *, root: str = "payload") -> list[dict[str, str]]:
    """pydantic's (or FastAPI's) errors as ``[{"field": "a.b", "message": ...}]``, the
    ``details`` of a 400; never the input values."""
    details = []
    for err in errors:
        loc = err.get("loc", ()) if isinstance(err, dict) else ()
        message = err.get("msg", "invalid value") if isinstance(err, dict) else str(err)
        details.append({"field": field_path(loc, root=root), "message": str(message)})
    return details


class ErrorBody(ApiModel):
    """Every failure: a human-readable ``error``; ``details`` for validation failures."""

    error: str = Field(examples=["Instance not found"])
    details: list[FieldError] | None = None


class Pagination(ApiModel):
    """The ``pagination`` object of a paged list (reference)."""

    total: int = Field(examples=[150])
    limit: int = Field(examples=[100])
    skip: int = Field(examples=[0])
    has_more: bool = Field(examples=[True])

    @classmethod
    def of(cls, total: int, limit: int, skip: int) -> Pagination:
        """The page of ``limit`` items after ``skip`` of ``total``."""
        return cls(total=total, limit=limit, skip=skip, has_more=skip + limit < total)
