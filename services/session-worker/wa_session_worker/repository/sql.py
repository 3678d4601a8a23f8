"""SQL implementation of :class:`Repository` (SQLAlchemy Core, asyncpg or aiosqlite).

Writes are group-committed (:class:`wa_common.batching.GroupCommit`, issue 15): the write steps
(:meth:`~SqlRepository._insert_all`, :meth:`~SqlRepository._update`,
:meth:`~SqlRepository._delete_all`) that arrive together (concurrent sends, receipts, received
messages of every session of this worker) run in order in **one transaction**, so a window of
N steps costs one ``BEGIN``/``COMMIT``, one connection checkout and one WAL flush instead of N.
Each step keeps its own meaning:

- an insert step writes each record with ``ON CONFLICT DO NOTHING``: a taken unique key does
  not abort the transaction; the step's earlier records are deleted again in the same
  transaction and the step answers ``False`` (nothing of it stays written, as the contract says);
- any other failure aborts the window; then every step of it runs again alone, in its own
  transaction, and each caller gets its own result or error (so one value the store cannot hold
  fails one request, not its neighbours).

A step's effects are visible to the next step of the same window, and windows commit one after
the other in submission order (the feed clock's "committed in stamp order" holds). Reads run on
their own pooled connection. Times are converted to the columns' representation (and back to
aware UTC) by their type, :class:`wa_session_worker.models.UtcDateTime`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import fields as dc_fields
from typing import Any

from sqlalchemy import ColumnElement, Table, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.operators import in_op

from wa_common.batching import GroupCommit
from wa_common.db import ping, provider_of
from wa_session_worker import models as m
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.query import Find, R
from wa_session_worker.repository.records import KINDS
from wa_session_worker.repository.sql_window import (
    DeleteStep,
    InsertStep,
    Statements,
    Step,
    UpdateStep,
    run_step,
    run_window,
)

_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "==": operator.eq,
    "in": in_op,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _table(kind: type[Any]) -> Table:
    return m.Base.metadata.tables[KINDS[kind].table]


def _rec(kind: type[R], row: Any) -> R:
    mapping = row._mapping
    return kind(**{f.name: mapping[f.name] for f in dc_fields(kind)})  # type: ignore[arg-type]


def _values(rec: Any) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dc_fields(rec)}


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(find: Find[Any]) -> list[ColumnElement[bool]]:
    t = _table(find.kind)
    conds = [_OPS[w.op](t.c[w.field], w.value) for w in find.where]
    if find.search is not None:
        pattern = _like(find.search[0])
        conds.append(or_(*(func.lower(t.c[name]).like(pattern, escape="\\") for name in find.search[1])))
    return conds


async def _update_on(conn: AsyncConnection, find: Find[R], changes: dict[str, Any]) -> list[R]:
    t = _table(find.kind)
    rows = await conn.execute(update(t).where(*_conditions(find)).values(**changes).returning(t))
    return [_rec(find.kind, r) for r in rows.all()]


class SqlRepository(Repository):
    """The repository on the worker's relational store (``WORKER_DATABASE_URL``); writes are
    group-committed (module docstring), at most ``max_window`` steps per transaction."""

    commits_in_order = True

    def __init__(self, engine: AsyncEngine, url: str, *, max_window: int = 256) -> None:
        self.engine = engine
        self.provider = provider_of(url)
        dialect_insert = pg_insert if self.provider == "postgresql" else sqlite_insert
        # One statement per table, built once: values are bound per execution.
        inserts = {
            kind: dialect_insert(_table(kind))
            .on_conflict_do_nothing()
            .returning(*(_table(kind).c[name] for name in KINDS[kind].unique[0]))
            for kind in KINDS
        }
        self._statements = Statements(
            table=_table,
            insert_returning_key=inserts.__getitem__,
            update_on=_update_on,
            conditions=_conditions,
            values=_values,
        )
        self._writes: GroupCommit[Step, Any] = GroupCommit(
            self._commit_window, name="worker.store", max_items=max_window
        )

    async def ping(self) -> bool:
        return await ping(self.engine)

    async def _commit_window(self, steps: list[Step]) -> list[Any]:
        """Run ``steps`` in one transaction (:func:`.sql_window.run_window`); on a failure,
        each alone in its own (module docstring)."""
        try:
            async with self.engine.begin() as conn:
                return await run_window(conn, self._statements, steps)
        except Exception:
            if len(steps) == 1:
                raise
        results: list[Any] = []
        for step in steps:
            try:
                async with self.engine.begin() as conn:
                    results.append(await run_step(conn, self._statements, step))
            except Exception as exc:  # this caller's own error
                results.append(exc)
        return results

    async def _insert_all(
        self, recs: Sequence[Any], then: Sequence[tuple[Find[Any], dict[str, Any]]] = ()
    ) -> bool:
        return bool(await self._writes.submit(InsertStep(list(recs), list(then))))

    async def _select(self, find: Find[R]) -> list[R]:
        t = _table(find.kind)
        order = [t.c[name].desc() if find.descending else t.c[name] for name in find.order]
        query = select(t).where(*_conditions(find)).order_by(*order).offset(find.skip).limit(find.limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_rec(find.kind, r) for r in rows]

    async def _count(self, find: Find[Any]) -> int:
        query = select(func.count()).select_from(_table(find.kind)).where(*_conditions(find))
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def _update(self, find: Find[R], changes: dict[str, Any]) -> list[R]:
        """One ``UPDATE … RETURNING``: a record changed meanwhile is changed only if it still
        meets the conditions (a late "delivered" cannot overwrite a "read" committed first)."""
        updated: list[R] = await self._writes.submit(UpdateStep(find, changes))
        return updated

    async def _delete_all(self, finds: Sequence[Find[Any]]) -> list[int]:
        deleted: list[int] = await self._writes.submit(DeleteStep(list(finds)))
        return deleted
