"""In-memory implementation of :class:`Repository`, for fast tests of the worker's service logic.

It honours the same contract as the SQL and MongoDB repositories
(``tests/test_repository_contract.py`` runs against all three): ordering, pagination, the
``since`` rule of the events feed, idempotency records, the outbox. A test that needs a store
only to hold records can use it instead of a migrated database and run in milliseconds.

It is **not a production store** and no setting selects it. What it does not do:

* persist anything: the data lives in this object and is gone with it; two workers (or two
  processes) never share it;
* enforce what a real store refuses: column sizes, NUL characters, 32-bit integers; it never
  raises a driver error, so the paths that answer "the store cannot hold its data" or retry an
  outage cannot be tested on it;
* round times like MongoDB does (to the millisecond): it keeps them as given, turned to aware UTC;
* hold shard leases or worker membership (those always live in the SQL store).

Its store steps never await anything, so each method is one atomic step for the event loop (the
transactions of the SQL repository): a taken key refuses a whole :meth:`~Repository._insert_all`,
as the SQL transaction does. Unique keys are those of
:data:`~wa_session_worker.repository.records.KINDS` (the SQL keys).
Records are copied in and out: a caller that changes a record it passed or got back does not
change the store.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import fields as dc_fields
from dataclasses import replace
from datetime import datetime
from typing import Any

from wa_common.schemas.wire import as_utc
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.query import Find, R
from wa_session_worker.repository.records import KINDS

_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "in": lambda value, values: value in values,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _utc(value: Any) -> Any:
    """Times as the stores read them back: aware UTC (a naive one is taken as UTC)."""
    return as_utc(value) if isinstance(value, datetime) else value


def _stored(rec: R) -> R:
    """A copy of ``rec`` to keep: nothing shared with the caller, every time aware UTC."""
    copy: Any = deepcopy(rec)
    for f in dc_fields(copy):
        setattr(copy, f.name, _utc(getattr(copy, f.name)))
    return copy


def _meets(rec: Any, find: Find[Any]) -> bool:
    if not all(_TESTS[w.op](getattr(rec, w.field), _utc(w.value)) for w in find.where):
        return False
    if find.search is None:
        return True
    needle, names = find.search[0].lower(), find.search[1]
    return any(needle in (getattr(rec, name) or "").lower() for name in names)


def _clash(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are of one kind and share a unique key."""
    return type(a) is type(b) and any(
        all(getattr(a, name) == getattr(b, name) for name in key) for key in KINDS[type(a)].unique
    )


class MemoryRepository(Repository):
    """The repository on plain lists, one a record kind (see the module's docstring)."""

    provider = "memory"

    def __init__(self) -> None:
        self.tables: defaultdict[type[Any], list[Any]] = defaultdict(list)  # by record class

    async def ping(self) -> bool:
        return True

    async def _insert_all(
        self, recs: Sequence[Any], then: Sequence[tuple[Find[Any], dict[str, Any]]] = ()
    ) -> bool:
        for i, rec in enumerate(recs):
            if any(_clash(rec, other) for other in [*self.tables[type(rec)], *recs[:i]]):
                return False
        for rec in recs:
            self.tables[type(rec)].append(_stored(rec))
        for change in then:
            await self._update(*change)
        return True

    async def _select(self, find: Find[R]) -> list[R]:
        """Unsorted records keep their insertion order."""
        rows = [r for r in self.tables[find.kind] if _meets(r, find)]
        if find.order:
            # PostgreSQL's order: NULL after the values ascending, before them descending.
            rows.sort(
                key=lambda r: [(getattr(r, n) is None, getattr(r, n)) for n in find.order],
                reverse=find.descending,
            )
        end = None if find.limit is None else find.skip + find.limit
        return [deepcopy(r) for r in rows[find.skip : end]]

    async def _count(self, find: Find[Any]) -> int:
        return sum(1 for r in self.tables[find.kind] if _meets(r, find))

    async def _update(self, find: Find[R], changes: dict[str, Any]) -> list[R]:
        table = self.tables[find.kind]
        changed = []
        for i, rec in enumerate(table):
            if _meets(rec, find):
                table[i] = _stored(replace(rec, **changes))
                changed.append(deepcopy(table[i]))
        return changed

    async def _delete_all(self, finds: Sequence[Find[Any]]) -> list[int]:
        deleted = []
        for find in finds:
            table = self.tables[find.kind]
            kept = [r for r in table if not _meets(r, find)]
            deleted.append(len(table) - len(kept))
            table[:] = kept
        return deleted
