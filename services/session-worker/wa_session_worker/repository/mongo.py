"""MongoDB implementation of :class:`Repository` (``pymongo.AsyncMongoClient``).

Collections mirror the SQL tables (document keys = record field names, ``_id`` = record id);
:meth:`MongoRepository.start` creates the indexes every query needs. Times are stored as BSON
dates (UTC, to the millisecond) and read back aware UTC (``tz_aware=True, tzinfo=UTC``). A
standalone server has no multi-document transactions: a step that writes several documents
writes them one by one (see :meth:`~wa_session_worker.repository.base.Repository._insert_all`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import fields as dc_fields
from datetime import UTC
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.query import Find, R
from wa_session_worker.repository.records import KINDS

Doc = dict[str, Any]

_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "instances": [[("user_id", ASCENDING), ("created_at", ASCENDING)], [("shard", ASCENDING)]],
    "messages": [[("instance_id", ASCENDING), ("remote_jid", ASCENDING), ("timestamp", DESCENDING)]],
    "contacts": [[("instance_id", ASCENDING), ("is_group", ASCENDING), ("name", ASCENDING)]],
    "activity": [
        [("instance_id", ASCENDING), ("action", ASCENDING), ("created_at", DESCENDING)],
        [("instance_id", ASCENDING), ("created_at", DESCENDING)],
    ],
    "recent_events": [
        [("instance_id", ASCENDING), ("occurred_at", DESCENDING)],
        [("occurred_at", ASCENDING)],
    ],
    "outbox": [[("shard", ASCENDING), ("created_at", ASCENDING)]],
    "idempotency": [[("created_at", ASCENDING)]],
}
"""The indexes the queries need, besides the records' unique keys (:meth:`MongoRepository.start`)."""

_OPS = {"==": "$eq", "in": "$in", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}


def _key(name: str) -> str:
    """The document key of a record field."""
    return "_id" if name == "id" else name


def _rec(kind: type[R], doc: Doc) -> R:
    values = {f.name: doc[_key(f.name)] for f in dc_fields(kind) if _key(f.name) in doc}  # type: ignore[arg-type]
    return kind(**values)


def _doc(rec: Any) -> Doc:
    return {_key(f.name): getattr(rec, f.name) for f in dc_fields(rec)}


def _doc_keys(changes: dict[str, Any]) -> Doc:
    return {_key(name): value for name, value in changes.items()}


def _query(find: Find[Any]) -> Doc:
    query: Doc = {}
    for w in find.where:
        query.setdefault(_key(w.field), {})[_OPS[w.op]] = w.value
    if find.search is not None:
        pattern = {"$regex": re.escape(find.search[0]), "$options": "i"}
        query["$or"] = [{_key(name): pattern} for name in find.search[1]]
    return query


class MongoRepository(Repository):
    provider = "mongodb"

    def __init__(self, url: str, database: str) -> None:
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(url, tz_aware=True, tzinfo=UTC)
        self.db = self.client[database]

    def _coll(self, kind: type[Any]) -> AsyncCollection[Doc]:
        return self.db[KINDS[kind].table]

    async def start(self) -> None:
        for table, unique in KINDS.values():
            for key in unique:
                if key != ("id",):  # ``_id`` is unique already
                    await self.db[table].create_index([(name, ASCENDING) for name in key], unique=True)
        for collection, indexes in _INDEXES.items():
            for index in indexes:
                await self.db[collection].create_index(index)

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> bool:
        await self.db.command("ping")
        return True

    async def _insert_all(
        self, recs: Sequence[Any], then: Sequence[tuple[Find[Any], dict[str, Any]]] = ()
    ) -> bool:
        written: list[tuple[AsyncCollection[Doc], Any]] = []
        try:
            for rec in recs:
                coll = self._coll(type(rec))
                written.append((coll, (await coll.insert_one(_doc(rec))).inserted_id))
        except DuplicateKeyError:
            for coll, doc_id in reversed(written):
                await coll.delete_one({"_id": doc_id})
            return False
        for change in then:
            await self._update(*change)
        return True

    async def _select(self, find: Find[R]) -> list[R]:
        if find.limit == 0:
            return []  # MongoDB reads limit(0) as "no limit"
        direction = DESCENDING if find.descending else ASCENDING
        cursor = self._coll(find.kind).find(_query(find))
        if find.order:
            cursor = cursor.sort([(_key(name), direction) for name in find.order])
        cursor = cursor.skip(find.skip)
        if find.limit is not None:
            cursor = cursor.limit(find.limit)
        return [_rec(find.kind, d) async for d in cursor]

    async def _count(self, find: Find[Any]) -> int:
        return await self._coll(find.kind).count_documents(_query(find))

    async def _update(self, find: Find[R], changes: dict[str, Any]) -> list[R]:
        """Each record that meets the conditions is changed if it still does when its turn comes
        (one atomic ``findOneAndUpdate`` each)."""
        coll, query = self._coll(find.kind), _query(find)
        changed = []
        for doc_id in [d["_id"] async for d in coll.find(query, {"_id": 1})]:
            doc = await coll.find_one_and_update(
                {"$and": [query, {"_id": doc_id}]},
                {"$set": _doc_keys(changes)},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                changed.append(_rec(find.kind, doc))
        return changed

    async def _upsert(self, find: Find[R], changes: dict[str, Any], new: R) -> R:
        """One atomic ``findOneAndUpdate`` with ``upsert``: ``new``'s other fields only on insert."""
        # An insert takes the query's equality fields and ``$set``; a key in two places conflicts.
        given = {_key(w.field) for w in find.where} | set(_doc_keys(changes))
        defaults = {k: v for k, v in _doc(new).items() if k not in given}
        doc = await self._coll(find.kind).find_one_and_update(
            _query(find),
            {"$set": _doc_keys(changes), "$setOnInsert": defaults},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # upsert=True always returns a document
        return _rec(find.kind, doc)

    async def _delete_all(self, finds: Sequence[Find[Any]]) -> list[int]:
        return [(await self._coll(find.kind).delete_many(_query(find))).deleted_count for find in finds]
