"""The document store of the session worker: the repository interface.

Three implementations honour one contract (``tests/test_repository_contract.py``):
:class:`~wa_session_worker.repository.sql.SqlRepository` (PostgreSQL/SQLite),
:class:`~wa_session_worker.repository.mongo.MongoRepository` (MongoDB) and, for fast tests of
service logic only, :class:`~wa_session_worker.repository.memory.MemoryRepository`. The records
and where each kind is stored: :mod:`.records`; what a store step concerns: :mod:`.query`.
Times are arguments (the services read their clock): a repository reads none.
Shard leases and worker membership are not here: they always live in the SQL store
(:mod:`wa_session_worker.shards.leases`).

What every query means is decided here, once: :class:`Repository` implements the public methods
on five store steps (:meth:`~Repository._insert_all`, :meth:`~Repository._select`,
:meth:`~Repository._count`, :meth:`~Repository._update`, :meth:`~Repository._delete_all`), which
take a :class:`~.query.Find` that names the records in terms every store answers; an implementation runs
those steps on its store (and may replace :meth:`~Repository._upsert` by a native one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from wa_common.ids import new_id
from wa_session_worker.repository.query import Find, R, Where, between, equal
from wa_session_worker.repository.records import (
    KINDS,
    ActivityRec,
    ContactRec,
    EventRec,
    IdempotencyRec,
    InstanceRec,
    MessageRec,
    OutboxRec,
)

_OF_AN_INSTANCE: tuple[type[Any], ...] = (MessageRec, ContactRec, ActivityRec, EventRec, IdempotencyRec)
"""The kinds deleted with their instance (outbox entries stay: ``instance.deleted`` is one)."""


class Repository(ABC):
    """Queries of the session worker's document data. Methods raise the driver's errors on
    store failures (the bus then redelivers the request)."""

    provider: str
    commits_in_order: bool = False
    """Whether writes started one after the other commit in that order (and a later one never
    before an earlier one): the SQL store's group commit does; the feed clock relies on it."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, create indexes where the store needs it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def ping(self) -> bool: ...

    # Store steps: what an implementation runs on its store ------------------------------------

    @abstractmethod
    async def _insert_all(
        self, recs: Sequence[Any], then: Sequence[tuple[Find[Any], dict[str, Any]]] = ()
    ) -> bool:
        """Insert ``recs`` in this order, then set each of ``then``'s changes, as one step: if a
        record's unique key (:data:`~.records.KINDS`) is taken, nothing stays written and the answer is
        ``False``. (A store without multi-document transactions writes one by one and removes
        what it wrote on a taken key; a crash midway leaves the first records.)"""

    @abstractmethod
    async def _select(self, find: Find[R]) -> list[R]:
        """The records ``find`` concerns, ordered and cut as it says."""

    @abstractmethod
    async def _count(self, find: Find[Any]) -> int:
        """How many records meet ``find``'s conditions."""

    @abstractmethod
    async def _update(self, find: Find[R], changes: dict[str, Any]) -> list[R]:
        """Set ``changes`` (field names, not empty) on the records meeting ``find``'s
        conditions; returns those records as stored afterwards."""

    @abstractmethod
    async def _delete_all(self, finds: Sequence[Find[Any]]) -> list[int]:
        """Delete the records of each of ``finds``, as one step where the store can; returns
        how many each deleted."""

    async def _upsert(self, find: Find[R], changes: dict[str, Any], new: R) -> R:
        """Set ``changes`` on the record ``find`` names, or insert ``new`` if there is none;
        returns the stored record. Tried three times: an insert that loses a race for the same
        key makes the next update find the winner's record; ``RuntimeError`` after that."""
        for _ in range(3):
            updated = await self._update(find, changes)
            if updated:
                return updated[0]
            if await self._insert_all([new]):
                return new
        raise RuntimeError(f"{KINDS[find.kind].table} upsert kept conflicting")

    async def _first(self, find: Find[R]) -> R | None:
        found = await self._select(find)
        return found[0] if found else None

    async def _page(self, find: Find[R]) -> tuple[list[R], int]:
        """One page of ``find`` and how many records meet its conditions."""
        return await self._select(find), await self._count(find)

    # Instances -------------------------------------------------------------------------------

    async def create_instance(self, rec: InstanceRec) -> bool:
        """Insert ``rec``; ``False`` if an instance with that id already exists."""
        return await self._insert_all([rec])

    async def get_instance(self, instance_id: str) -> InstanceRec | None:
        return await self._first(Find(InstanceRec, equal(id=instance_id)))

    async def list_instances(self, user_id: str | None) -> list[InstanceRec]:
        """Instances of ``user_id`` (every instance when ``None``), oldest first."""
        mine = () if user_id is None else equal(user_id=user_id)
        return await self._select(Find(InstanceRec, mine, order=("created_at", "id")))

    async def instances_in_shard(self, shard: int) -> list[InstanceRec]:
        return await self._select(Find(InstanceRec, equal(shard=shard)))

    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRec | None:
        """Set ``fields`` (record field names); returns the updated record or ``None``."""
        if not fields:
            return await self.get_instance(instance_id)
        updated = await self._update(Find(InstanceRec, equal(id=instance_id)), fields)
        return updated[0] if updated else None

    async def delete_instance(self, instance_id: str) -> bool:
        """Delete the instance and all its messages, contacts, activity, events, keys (in one
        step where the store can); its outbox entries stay (``instance.deleted`` is one)."""
        owned = [Find(kind, equal(instance_id=instance_id)) for kind in _OF_AN_INSTANCE]
        deleted = await self._delete_all([*owned, Find(InstanceRec, equal(id=instance_id))])
        return deleted[-1] > 0

    # Messages --------------------------------------------------------------------------------

    async def add_message(self, rec: MessageRec) -> bool:
        """Insert ``rec``; ``False`` if (instance_id, message_id) is already stored."""
        return await self._insert_all([rec])

    async def record_message(
        self,
        rec: MessageRec,
        event: EventRec | None,
        pending: OutboxRec | None = None,
        *,
        idempotency: tuple[str, dict[str, Any]] | None = None,
    ) -> bool:
        """Store a new message, its recent event, its outbox entry, the instance's
        ``last_activity_at`` and, for a send, its idempotency key's reply (``(key, reply)``, as
        :meth:`idempotency_finish`) in one step; ``False`` (and nothing written) if (instance_id,
        message_id) is already stored (or the event's or entry's id is taken)."""
        # The outbox entry first: a store without transactions that stops midway publishes the
        # event late rather than never (at least once).
        recs = [r for r in (pending, rec, event) if r is not None]
        changes: list[tuple[Find[Any], dict[str, Any]]] = [
            (Find(InstanceRec, equal(id=rec.instance_id)), {"last_activity_at": rec.created_at})
        ]
        if idempotency is not None:
            key, reply = idempotency
            started = Find(IdempotencyRec, equal(instance_id=rec.instance_id, key=key))
            changes.append((started, {"state": "done", "reply": reply}))
        return await self._insert_all(recs, then=changes)

    async def update_message_status(
        self, instance_id: str, message_ids: list[str], status: str, at: datetime, from_statuses: list[str]
    ) -> list[MessageRec]:
        """Set ``status`` on those messages whose status is in ``from_statuses`` (a late
        "delivered" never overwrites "read"); returns the messages that changed."""
        if not message_ids:
            return []
        advancing = [
            *equal(instance_id=instance_id),
            Where("message_id", "in", message_ids),
            Where("status", "in", from_statuses),
        ]
        changes = {"status": status, "status_updated_at": at, "updated_at": at}
        return await self._update(Find(MessageRec, advancing), changes)

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
        """One chat's messages, newest first, and the total matching count."""
        chat = [*equal(instance_id=instance_id, remote_jid=remote_jid), *between("timestamp", start, end)]
        newest_first = Find(
            MessageRec, chat, order=("timestamp", "id"), descending=True, skip=skip, limit=limit
        )
        return await self._page(newest_first)

    # Contacts --------------------------------------------------------------------------------

    async def upsert_contact(
        self, instance_id: str, remote_jid: str, *, at: datetime, **fields: Any
    ) -> ContactRec:
        """Create or update the contact ``remote_jid`` of an instance at time ``at``: on update
        every given field but a ``None`` is set (``number`` too); a new contact's ``number``
        defaults to the JID's user part."""
        changes = {k: v for k, v in fields.items() if v is not None}
        new = ContactRec(
            id=new_id(),
            instance_id=instance_id,
            remote_jid=remote_jid,
            created_at=at,
            updated_at=at,
            **{**changes, "number": changes.get("number") or remote_jid.split("@", 1)[0]},
        )
        contact = Find(ContactRec, equal(instance_id=instance_id, remote_jid=remote_jid))
        return await self._upsert(contact, {**changes, "updated_at": at}, new)

    async def list_contacts(
        self, instance_id: str, *, search: str | None, only_groups: bool, skip: int, limit: int
    ) -> tuple[list[ContactRec], int]:
        """Contacts ordered by name then number; ``search`` matches name, push name or number
        case-insensitively."""
        where = equal(instance_id=instance_id) + (equal(is_group=True) if only_groups else ())
        return await self._page(
            Find(
                ContactRec,
                where,
                search=(search, ("name", "push_name", "number")) if search else None,
                order=("name", "number"),
                skip=skip,
                limit=limit,
            )
        )

    # Activity and recent events --------------------------------------------------------------

    async def add_activity(self, rec: ActivityRec) -> None:
        """Insert ``rec`` (a taken id is ignored)."""
        await self._insert_all([rec])

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
        """Newest first, and the total matching count."""
        where = [*equal(instance_id=instance_id), *between("created_at", start, end)]
        if actions:
            where.append(Where("action", "in", actions))
        newest_first = Find(
            ActivityRec, where, order=("created_at", "id"), descending=True, skip=skip, limit=limit
        )
        return await self._page(newest_first)

    async def add_event(self, rec: EventRec) -> None:
        """Insert ``rec`` (a taken id is ignored)."""
        await self._insert_all([rec])

    # Transactional outbox

    async def stage_event(self, kept: EventRec | None, pending: OutboxRec) -> None:
        """Store an event's outbox entry (and its recent-event row) in one step, before it is
        published; a repeated ``pending.id`` (or ``kept.id``) is ignored: the first entry stands."""
        await self._insert_all([r for r in (pending, kept) if r is not None])

    async def outbox_due(self, shards: list[int], before: datetime, limit: int) -> list[OutboxRec]:
        """Outbox entries of ``shards`` created before ``before``, oldest first, at most ``limit``."""
        if not shards:
            return []
        due = [Where("shard", "in", shards), Where("created_at", "<", before)]
        return await self._select(Find(OutboxRec, due, order=("created_at", "id"), limit=limit))

    async def outbox_done(self, ids: list[str]) -> None:
        """Forget published entries (unknown ids are ignored)."""
        if ids:
            await self._delete_all([Find(OutboxRec, [Where("id", "in", ids)])])

    async def recent_events(
        self, instance_id: str, *, since: datetime | None, types: list[str] | None, limit: int
    ) -> tuple[list[EventRec], bool]:
        """At most ``limit`` events, newest first, and whether more matched: without ``since``
        the newest ones; with it, the oldest ones after ``since`` (so a caller that continues
        from the newest time it got sees every event once)."""
        where = [*equal(instance_id=instance_id)]
        if since is not None:
            where.append(Where("occurred_at", ">", since))
        if types:
            where.append(Where("type", "in", types))
        found = await self._select(
            Find(EventRec, where, order=("occurred_at", "id"), descending=since is None, limit=limit + 1)
        )
        page = found[:limit]
        if since is not None:
            page.reverse()
        return page, len(found) > limit

    async def prune(self, events_before: datetime, idempotency_before: datetime) -> int:
        """Delete recent events and idempotency records older than the given times."""
        deleted = await self._delete_all(
            [
                Find(EventRec, [Where("occurred_at", "<", events_before)]),
                Find(IdempotencyRec, [Where("created_at", "<", idempotency_before)]),
            ]
        )
        return sum(deleted)

    # Idempotency -----------------------------------------------------------------------------

    async def idempotency_begin(
        self, instance_id: str, key: str, command: str, *, at: datetime
    ) -> IdempotencyRec | None:
        """Record that ``key`` starts at ``at``; returns the existing record instead if there is one."""
        if await self._insert_all([IdempotencyRec(instance_id, key, command, "pending", None, at)]):
            return None
        return await self._first(Find(IdempotencyRec, equal(instance_id=instance_id, key=key)))

    async def idempotency_finish(self, instance_id: str, key: str, reply: dict[str, Any] | None) -> None:
        """Store the reply of ``key`` (``None`` forgets the key: the command may run again)."""
        started = Find(IdempotencyRec, equal(instance_id=instance_id, key=key))
        if reply is None:
            await self._delete_all([started])
        else:
            await self._update(started, {"state": "done", "reply": reply})
