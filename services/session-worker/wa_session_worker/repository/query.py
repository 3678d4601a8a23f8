"""What a store step concerns, in terms every store answers: :class:`Find` (a kind of record,
its conditions :class:`Where`, search, order, page). :class:`~.base.Repository` builds them;
each implementation (SQL, MongoDB, memory) runs them on its store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, NamedTuple, TypeVar

R = TypeVar("R")

Op = Literal["==", "in", ">", ">=", "<", "<="]


class Where(NamedTuple):
    """The condition ``field op value`` on a record field (``"in"``: ``value`` is a list)."""

    field: str
    op: Op
    value: Any


def equal(**values: Any) -> tuple[Where, ...]:
    """``field == value`` for each keyword."""
    return tuple(Where(name, "==", value) for name, value in values.items())


def between(name: str, start: datetime | None, end: datetime | None) -> list[Where]:
    """``start <= field <= end``, each bound only when given."""
    bounds: list[Where] = []
    if start is not None:
        bounds.append(Where(name, ">=", start))
    if end is not None:
        bounds.append(Where(name, "<=", end))
    return bounds


@dataclass(frozen=True)
class Find(Generic[R]):
    """Which records of one kind (``kind``, a record class) a store step concerns.

    A record is concerned when it meets every condition of ``where`` and, with ``search`` =
    (text, fields), when one of those fields contains the text, ignoring case (``None`` never
    does). Reads sort by the ``order`` fields, all ascending or all ``descending`` (``None``
    sorts as PostgreSQL does: after the values ascending), skip ``skip`` records and return at
    most ``limit`` (``None``: all). Counting, changing and deleting heed only the conditions.
    """

    kind: type[R]
    where: Sequence[Where] = ()
    search: tuple[str, tuple[str, ...]] | None = None
    order: tuple[str, ...] = ()
    descending: bool = False
    skip: int = 0
    limit: int | None = None
