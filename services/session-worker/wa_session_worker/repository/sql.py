"""SQL implementation of :class:`Repository` (SQLAlchemy Core, asyncpg or aiosqlite).

Each store step is one transaction. Times are converted to the columns' representation (and
back to aware UTC) by their type, :class:`wa_session_worker.models.UtcDateTime`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import fields as dc_fields
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.operators import in_op

from wa_common.db import ping, provider_of
from wa_session_worker import models as m
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.query import Find, R
from wa_session_worker.repository.records import KINDS

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
    """The repository on the worker's relational store (``WORKER_DATABASE_URL``)."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.provider = provider_of(url)

    async def ping(self) -> bool:
        return await ping(self.engine)

    async def _insert_all(
        self, recs: Sequence[Any], then: tuple[Find[Any], dict[str, Any]] | None = None
    ) -> bool:
        try:
            async with self.engine.begin() as conn:
                for rec in recs:
                    await conn.execute(insert(_table(type(rec))).values(**_values(rec)))
                if then is not None:
                    await _update_on(conn, *then)
        except IntegrityError:
            return False
        return True

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
        async with self.engine.begin() as conn:
            return await _update_on(conn, find, changes)

    async def _delete_all(self, finds: Sequence[Find[Any]]) -> list[int]:
        async with self.engine.begin() as conn:
            results = [
                await conn.execute(delete(_table(find.kind)).where(*_conditions(find))) for find in finds
            ]
        return [int(r.rowcount or 0) for r in results]
