"""MongoDB implementation of :class:`Repository` (``pymongo.AsyncMongoClient``).

Collections mirror the SQL tables (document keys = record field names, ``_id`` = record id);
:meth:`MongoRepository.start` creates the indexes every query needs. Times are stored as UTC
``datetime`` and read back timezone-aware (``tz_aware=True``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import fields as dc_fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from wa_common.ids import new_id
from wa_common.schemas.envelope import utcnow
from wa_session_worker.repository.base import (
    ActivityRec,
    ContactRec,
    EventRec,
    IdempotencyRec,
    InstanceRec,
    MessageRec,
    OutboxRec,
    Repository,
)

R = TypeVar("R")


def _rec(cls: type[R], doc: dict[str, Any]) -> R:
    values = {}
    for f in dc_fields(cls):  # type: ignore[arg-type]
        value = doc.get(f.name, doc.get("_id") if f.name == "id" else None)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if f.name in doc or f.name == "id":
            values[f.name] = value
    return cls(**values)


def _doc(rec: Any, id_field: str | None = "id") -> dict[str, Any]:
    doc = {f.name: getattr(rec, f.name) for f in dc_fields(rec)}
    if id_field:
        doc["_id"] = doc.pop(id_field)
    return doc


class MongoRepository(Repository):
    provider = "mongodb"

    def __init__(self, url: str, database: str) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
        self.db = self.client[database]
        self.instances = self.db["instances"]
        self.messages = self.db["messages"]
        self.contacts = self.db["contacts"]
        self.activity = self.db["activity"]
        self.events = self.db["recent_events"]
        self.outbox = self.db["outbox"]
        self.idem = self.db["idempotency"]

    async def start(self) -> None:
        await self.instances.create_index([("user_id", ASCENDING), ("created_at", ASCENDING)])
        await self.instances.create_index([("shard", ASCENDING)])
        await self.messages.create_index([("instance_id", ASCENDING), ("message_id", ASCENDING)], unique=True)
        await self.messages.create_index(
            [("instance_id", ASCENDING), ("remote_jid", ASCENDING), ("timestamp", DESCENDING)]
        )
        await self.contacts.create_index([("instance_id", ASCENDING), ("remote_jid", ASCENDING)], unique=True)
        await self.contacts.create_index(
            [("instance_id", ASCENDING), ("is_group", ASCENDING), ("name", ASCENDING)]
        )
        await self.activity.create_index(
            [("instance_id", ASCENDING), ("action", ASCENDING), ("created_at", DESCENDING)]
        )
        await self.activity.create_index([("instance_id", ASCENDING), ("created_at", DESCENDING)])
        await self.events.create_index([("instance_id", ASCENDING), ("occurred_at", DESCENDING)])
        await self.outbox.create_index([("shard", ASCENDING), ("created_at", ASCENDING)])
        await self.events.create_index([("occurred_at", ASCENDING)])
        await self.idem.create_index([("instance_id", ASCENDING), ("key", ASCENDING)], unique=True)
        await self.idem.create_index([("created_at", ASCENDING)])

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> bool:
        await self.db.command("ping")
        return True

    async def create_instance(self, rec: InstanceRec) -> bool:
        try:
            await self.instances.insert_one(_doc(rec))
        except DuplicateKeyError:
            return False
        return True

    async def get_instance(self, instance_id: str) -> InstanceRec | None:
        doc = await self.instances.find_one({"_id": instance_id})
        return _rec(InstanceRec, doc) if doc else None

    async def list_instances(self, user_id: str | None) -> list[InstanceRec]:
        query = {} if user_id is None else {"user_id": user_id}
        cursor = self.instances.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [_rec(InstanceRec, d) async for d in cursor]

    async def instances_in_shard(self, shard: int) -> list[InstanceRec]:
        return [_rec(InstanceRec, d) async for d in self.instances.find({"shard": shard})]

    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRec | None:
        if not fields:
            return await self.get_instance(instance_id)
        doc = await self.instances.find_one_and_update(
            {"_id": instance_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        return _rec(InstanceRec, doc) if doc else None

    async def delete_instance(self, instance_id: str) -> bool:
        for coll in (self.messages, self.contacts, self.activity, self.events, self.idem):
            await coll.delete_many({"instance_id": instance_id})
        result = await self.instances.delete_one({"_id": instance_id})
        return result.deleted_count > 0

    async def add_message(self, rec: MessageRec) -> bool:
        try:
            await self.messages.insert_one(_doc(rec))
        except DuplicateKeyError:
            return False
        return True

    async def record_message(
        self, rec: MessageRec, event: EventRec | None, pending: OutboxRec | None = None
    ) -> bool:
        # No multi-document transactions on a standalone server: the outbox entry goes first, so
        # a crash in between publishes the event late rather than never (at least once).
        if pending is not None:
            with contextlib.suppress(DuplicateKeyError):
                await self.outbox.insert_one(_doc(pending))
        if not await self.add_message(rec):
            if pending is not None:
                await self.outbox.delete_one({"_id": pending.id})
            return False
        await self.instances.update_one(
            {"_id": rec.instance_id}, {"$set": {"last_activity_at": rec.created_at}}
        )
        if event is not None:
            await self.add_event(event)
        return True

    async def update_message_status(
        self, instance_id: str, message_ids: list[str], status: str, at: datetime, from_statuses: list[str]
    ) -> list[MessageRec]:
        query = {
            "instance_id": instance_id,
            "message_id": {"$in": message_ids},
            "status": {"$in": from_statuses},
        }
        docs = [d async for d in self.messages.find(query)]
        if docs:
            await self.messages.update_many(
                {"_id": {"$in": [d["_id"] for d in docs]}},
                {"$set": {"status": status, "status_updated_at": at, "updated_at": at}},
            )
        changed = [_rec(MessageRec, d) for d in docs]
        for rec in changed:
            rec.status, rec.status_updated_at, rec.updated_at = status, at, at
        return changed

    async def chat_messages(
        self,
        instance_id: str,
        remote_jid: str,
        *,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[MessageRec], int]:
        query: dict[str, Any] = {"instance_id": instance_id, "remote_jid": remote_jid}
        span: dict[str, Any] = {}
        if start is not None:
            span["$gte"] = start
        if end is not None:
            span["$lte"] = end
        if span:
            query["timestamp"] = span
        total = await self.messages.count_documents(query)
        cursor = (
            self.messages.find(query)
            .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return [_rec(MessageRec, d) async for d in cursor], total

    async def upsert_contact(self, instance_id: str, remote_jid: str, **fields: Any) -> ContactRec:
        now = utcnow()
        changes = {k: v for k, v in fields.items() if v is not None}
        number = changes.pop("number", None) or remote_jid.split("@", 1)[0]
        defaults = {
            "_id": new_id(),
            "number": number,
            "created_at": now,
            "name": None,
            "push_name": None,
            "is_group": False,
            "profile_picture": None,
            "about": None,
            "last_activity": None,
        }
        for key in changes:
            defaults.pop(key, None)
        doc = await self.contacts.find_one_and_update(
            {"instance_id": instance_id, "remote_jid": remote_jid},
            {"$set": {**changes, "updated_at": now}, "$setOnInsert": defaults},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # upsert=True always returns a document
        return _rec(ContactRec, doc)

    async def list_contacts(
        self, instance_id: str, *, search: str | None, only_groups: bool, skip: int, limit: int
    ) -> tuple[list[ContactRec], int]:
        query: dict[str, Any] = {"instance_id": instance_id}
        if only_groups:
            query["is_group"] = True
        if search:
            pattern = {"$regex": re.escape(search), "$options": "i"}
            query["$or"] = [{"name": pattern}, {"push_name": pattern}, {"number": pattern}]
        total = await self.contacts.count_documents(query)
        cursor = (
            self.contacts.find(query)
            .sort([("name", ASCENDING), ("number", ASCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return [_rec(ContactRec, d) async for d in cursor], total

    async def add_activity(self, rec: ActivityRec) -> None:
        await self.activity.insert_one(_doc(rec))

    async def list_activity(
        self,
        instance_id: str,
        *,
        actions: list[str] | None,
        start: datetime | None,
        end: datetime | None,
        skip: int,
        limit: int,
    ) -> tuple[list[ActivityRec], int]:
        query: dict[str, Any] = {"instance_id": instance_id}
        if actions:
            query["action"] = {"$in": actions}
        span: dict[str, Any] = {}
        if start is not None:
            span["$gte"] = start
        if end is not None:
            span["$lte"] = end
        if span:
            query["created_at"] = span
        total = await self.activity.count_documents(query)
        cursor = (
            self.activity.find(query)
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return [_rec(ActivityRec, d) async for d in cursor], total

    async def add_event(self, rec: EventRec) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.events.insert_one(_doc(rec))

    async def stage_event(self, kept: EventRec | None, pending: OutboxRec) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.outbox.insert_one(_doc(pending))
        if kept is not None:
            await self.add_event(kept)

    async def outbox_due(self, shards: list[int], before: datetime, limit: int) -> list[OutboxRec]:
        if not shards:
            return []
        query = {"shard": {"$in": shards}, "created_at": {"$lt": before}}
        cursor = self.outbox.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [_rec(OutboxRec, d) async for d in cursor]

    async def outbox_done(self, ids: list[str]) -> None:
        if ids:
            await self.outbox.delete_many({"_id": {"$in": ids}})

    async def recent_events(
        self, instance_id: str, *, since: datetime | None, types: list[str] | None, limit: int
    ) -> tuple[list[EventRec], bool]:
        query: dict[str, Any] = {"instance_id": instance_id}
        if since is not None:
            query["occurred_at"] = {"$gt": since}
        if types:
            query["type"] = {"$in": types}
        # Without "since" the newest events; with it the oldest after it (continuation).
        direction = DESCENDING if since is None else ASCENDING
        cursor = (
            self.events.find(query).sort([("occurred_at", direction), ("_id", direction)]).limit(limit + 1)
        )
        docs = [d async for d in cursor]
        page = [_rec(EventRec, d) for d in docs[:limit]]
        if since is not None:
            page.reverse()
        return page, len(docs) > limit

    async def prune(self, events_before: datetime, idempotency_before: datetime) -> int:
        a = await self.events.delete_many({"occurred_at": {"$lt": events_before}})
        b = await self.idem.delete_many({"created_at": {"$lt": idempotency_before}})
        return a.deleted_count + b.deleted_count

    async def idempotency_begin(self, instance_id: str, key: str, command: str) -> IdempotencyRec | None:
        rec = IdempotencyRec(instance_id, key, command, "pending", None, utcnow())
        try:
            await self.idem.insert_one(_doc(rec, id_field=None))
            return None
        except DuplicateKeyError:
            doc = await self.idem.find_one({"instance_id": instance_id, "key": key})
            return _rec(IdempotencyRec, doc) if doc else None

    async def idempotency_finish(self, instance_id: str, key: str, reply: dict[str, Any] | None) -> None:
        where = {"instance_id": instance_id, "key": key}
        if reply is None:
            await self.idem.delete_one(where)
        else:
            await self.idem.update_one(where, {"$set": {"state": "done", "reply": reply}})
