"""One group-commit window of the SQL store's write steps, run with as few statements as its
steps allow (issue 15). Used by :class:`~.sql.SqlRepository`; the steps' meanings are those of
:class:`~.base.Repository`'s store steps.

A window is run in one transaction as:

1. every insert step's records, **one multi-row statement per table** (``INSERT … ON CONFLICT DO
   NOTHING RETURNING <key>``; SQLAlchemy's "insertmanyvalues" for asyncpg and SQLite). A step
   with a record that was not inserted (a unique key taken, in the store or earlier in the
   window) answers ``False``, and its records that were inserted are deleted again;
2. the succeeded insert steps' follow-up changes (``then``: e.g. the instance's last activity,
   the send's idempotency reply), **one executemany per shape**; changes to the same record with
   the same fields keep only the last (they set constants, so the outcome is the same);
3. update steps (``UPDATE … RETURNING``) one by one, in window order;
4. delete steps, in window order.

Moving inserts before the updates and deletes of the same window is safe, except for a delete
followed by an insert into the same table (an idempotency key released, then claimed again):
such a window runs step by step in its order (:func:`run_in_order`). An update that finds a
record inserted later in the same window now sees it (e.g. a receipt arriving with its message).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from wa_session_worker.repository.query import Find
from wa_session_worker.repository.records import KINDS


@dataclass(frozen=True)
class InsertStep:
    """``_insert_all(recs, then)``: answers ``True``/``False``."""

    recs: Sequence[Any]
    then: Sequence[tuple[Find[Any], dict[str, Any]]] = ()


@dataclass(frozen=True)
class UpdateStep:
    """``_update(find, changes)``: answers the changed records."""

    find: Find[Any]
    changes: dict[str, Any]


@dataclass(frozen=True)
class DeleteStep:
    """``_delete_all(finds)``: answers how many each deleted."""

    finds: Sequence[Find[Any]]


Step = InsertStep | UpdateStep | DeleteStep


@dataclass
class Statements:
    """What a window needs from the repository: tables, conditions, row values, statements."""

    table: Callable[[type[Any]], Table]
    insert_returning_key: Callable[[type[Any]], Any]  # kind -> INSERT … ON CONFLICT DO NOTHING RETURNING key
    update_on: Callable[[AsyncConnection, Find[Any], dict[str, Any]], Any]  # async: changed records
    conditions: Callable[[Find[Any]], list[Any]]
    values: Callable[[Any], dict[str, Any]]
    _updates: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = field(default_factory=dict)

    def bulk_update(self, kind: type[Any], where: tuple[str, ...], changed: tuple[str, ...]) -> Any:
        """``UPDATE t SET c = :v_c … WHERE w = :w_w …`` for executemany (built once per shape)."""
        key = (KINDS[kind].table, where, changed)
        stmt = self._updates.get(key)
        if stmt is None:
            t = self.table(kind)
            stmt = (
                t.update()
                .where(and_(*(t.c[name] == bindparam(f"w_{name}") for name in where)))
                .values({name: bindparam(f"v_{name}") for name in changed})
            )
            self._updates[key] = stmt
        return stmt


def _key(rec: Any) -> tuple[Any, ...]:
    return tuple(getattr(rec, name) for name in KINDS[type(rec)].unique[0])


def reorderable(steps: Sequence[Step]) -> bool:
    """False when a delete precedes an insert into the same table (see the module docstring)."""
    deleted: set[str] = set()
    for step in steps:
        if isinstance(step, DeleteStep):
            deleted.update(KINDS[f.kind].table for f in step.finds)
        elif isinstance(step, InsertStep) and any(KINDS[type(r)].table in deleted for r in step.recs):
            return False
    return True


async def run_step(conn: AsyncConnection, s: Statements, step: Step) -> Any:
    """One step alone, as the repository contract says."""
    if isinstance(step, InsertStep):
        results = await _inserts(conn, s, [step])
        if results[0]:
            await _follow_ups(conn, s, [step])
        return results[0]
    if isinstance(step, UpdateStep):
        return await s.update_on(conn, step.find, step.changes)
    counts = [await conn.execute(delete(s.table(f.kind)).where(*s.conditions(f))) for f in step.finds]
    return [int(r.rowcount or 0) for r in counts]


async def run_in_order(conn: AsyncConnection, s: Statements, steps: Sequence[Step]) -> list[Any]:
    return [await run_step(conn, s, step) for step in steps]


async def run_window(conn: AsyncConnection, s: Statements, steps: Sequence[Step]) -> list[Any]:
    """Every step of the window (module docstring); one result per step, in order."""
    if not reorderable(steps):
        return await run_in_order(conn, s, steps)
    results: list[Any] = [None] * len(steps)
    inserts = [(i, st) for i, st in enumerate(steps) if isinstance(st, InsertStep)]
    if inserts:
        ok = await _inserts(conn, s, [st for _, st in inserts])
        for (i, _), answer in zip(inserts, ok, strict=True):
            results[i] = answer
        await _follow_ups(conn, s, [st for (_, st), answer in zip(inserts, ok, strict=True) if answer])
    for i, st in enumerate(steps):
        if not isinstance(st, InsertStep):
            results[i] = await run_step(conn, s, st)
    return results


async def _inserts(conn: AsyncConnection, s: Statements, steps: Sequence[InsertStep]) -> list[bool]:
    """Insert every record of ``steps``, one statement per table; whether each step's records
    were all inserted (a failed step's inserted records are deleted again)."""
    by_kind: dict[type[Any], list[Any]] = defaultdict(list)
    claimed: set[tuple[type[Any], tuple[Any, ...]]] = set()
    failed = [False] * len(steps)
    for n, step in enumerate(steps):
        keys = [(type(r), _key(r)) for r in step.recs]
        if any(k in claimed for k in keys):  # the same key twice in one window: the first wins
            failed[n] = True
            continue
        claimed.update(keys)
        for rec in step.recs:
            by_kind[type(rec)].append(rec)
    inserted: set[tuple[type[Any], tuple[Any, ...]]] = set()
    for kind, recs in by_kind.items():
        rows = await conn.execute(s.insert_returning_key(kind), [s.values(r) for r in recs])
        inserted.update((kind, tuple(row)) for row in rows.all())
    undo: dict[type[Any], list[tuple[Any, ...]]] = defaultdict(list)
    for n, step in enumerate(steps):
        if failed[n]:
            continue
        keys = [(type(r), _key(r)) for r in step.recs]
        if all(k in inserted for k in keys):
            continue
        failed[n] = True
        for kind, key in keys:
            if (kind, key) in inserted:
                undo[kind].append(key)
    for kind, keys in undo.items():
        t = s.table(kind)
        columns = [t.c[name] for name in KINDS[kind].unique[0]]
        await conn.execute(delete(t).where(tuple_(*columns).in_(keys)))
    return [not f for f in failed]


async def _follow_ups(conn: AsyncConnection, s: Statements, steps: Sequence[InsertStep]) -> None:
    """The ``then`` changes of ``steps``: equal-shaped ones as one executemany each."""
    Shape = tuple[type[Any], tuple[str, ...], tuple[str, ...]]  # kind, where fields, changed fields
    shaped: dict[Shape, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
    for step in steps:
        for find, changes in step.then:
            if any(w.op != "==" for w in find.where) or find.search is not None:
                await s.update_on(conn, find, changes)
                continue
            where = tuple(w.field for w in find.where)
            changed = tuple(sorted(changes))
            values = tuple(w.value for w in find.where)
            params = {f"w_{w.field}": w.value for w in find.where}
            params.update({f"v_{name}": changes[name] for name in changed})
            shaped[(find.kind, where, changed)][values] = params  # the last change of a record wins
    for (kind, where, changed), by_record in shaped.items():
        await conn.execute(s.bulk_update(kind, where, changed), list(by_record.values()))
