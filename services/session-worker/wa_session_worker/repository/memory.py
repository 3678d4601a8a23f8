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

Every method runs without awaiting anything, so each is one atomic step for the event loop (the
transactions of the SQL repository). Where the two real stores differ on a case the contract does
not cover, it follows the SQL repository (see each method). Records are copied in and out: a
caller that changes a record it passed or got back does not change the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import fields as dc_fields
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

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


def _utc(value: Any) -> Any:
    """Times as the stores read them back: aware UTC (a naive one is taken as UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _stored(rec: R) -> R:
    """A copy of ``rec`` to keep: nothing shared with the caller, every time aware UTC."""
    copy: Any = deepcopy(rec)
    for f in dc_fields(copy):
        setattr(copy, f.name, _utc(getattr(copy, f.name)))
    return copy


def _page(
    rows: Iterable[R], key: Callable[[R], Any], *, newest_first: bool, skip: int, limit: int
) -> tuple[list[R], int]:
    """One page of ``rows`` ordered by ``key`` (copies), and how many rows there are."""
    ordered = sorted(rows, key=key, reverse=newest_first)
    return [deepcopy(r) for r in ordered[skip : skip + limit]], len(ordered)


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= _utc(start)) and (end is None or at <= _utc(end))


class MemoryRepository(Repository):
    """The repository on plain dictionaries (see the module's docstring)."""

    provider = "memory"

    def __init__(self) -> None:
        self.instances: dict[str, InstanceRec] = {}
        self.messages: dict[str, MessageRec] = {}  # by record id
        self.contacts: dict[tuple[str, str], ContactRec] = {}  # by (instance id, remote jid)
        self.activity: dict[str, ActivityRec] = {}
        self.events: dict[str, EventRec] = {}  # the recent events of the feed
        self.outbox: dict[str, OutboxRec] = {}
        self.idempotency: dict[tuple[str, str], IdempotencyRec] = {}  # by (instance id, key)

    async def ping(self) -> bool:
        return True

    # Instances -------------------------------------------------------------------------------

    async def create_instance(self, rec: InstanceRec) -> bool:
        if rec.id in self.instances:
            return False
        self.instances[rec.id] = _stored(rec)
        return True

    async def get_instance(self, instance_id: str) -> InstanceRec | None:
        rec = self.instances.get(instance_id)
        return deepcopy(rec) if rec else None

    async def list_instances(self, user_id: str | None) -> list[InstanceRec]:
        mine = [r for r in self.instances.values() if user_id is None or r.user_id == user_id]
        return [deepcopy(r) for r in sorted(mine, key=lambda r: (r.created_at, r.id))]

    async def instances_in_shard(self, shard: int) -> list[InstanceRec]:
        return [deepcopy(r) for r in self.instances.values() if r.shard == shard]

    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRec | None:
        rec = self.instances.get(instance_id)
        if rec is None:
            return None
        rec = self.instances[instance_id] = _stored(replace(rec, **fields))
        return deepcopy(rec)

    async def delete_instance(self, instance_id: str) -> bool:
        """Its outbox entries stay (``instance.deleted`` is among them), as in the real stores."""
        for table in (self.messages, self.activity, self.events):
            for rid in [rid for rid, r in table.items() if r.instance_id == instance_id]:
                del table[rid]
        for keyed in (self.contacts, self.idempotency):
            for key in [key for key in keyed if key[0] == instance_id]:
                del keyed[key]
        return self.instances.pop(instance_id, None) is not None

    # Messages --------------------------------------------------------------------------------

    def _message_stored(self, rec: MessageRec) -> bool:
        """Whether the record id or (instance id, message id) is taken (the SQL keys)."""
        return rec.id in self.messages or any(
            m.instance_id == rec.instance_id and m.message_id == rec.message_id
            for m in self.messages.values()
        )

    async def add_message(self, rec: MessageRec) -> bool:
        if self._message_stored(rec):
            return False
        self.messages[rec.id] = _stored(rec)
        return True

    async def record_message(
        self, rec: MessageRec, event: EventRec | None, pending: OutboxRec | None = None
    ) -> bool:
        """All or nothing, as the SQL transaction: a taken event or outbox id refuses it too."""
        if (
            self._message_stored(rec)
            or (event is not None and event.id in self.events)
            or (pending is not None and pending.id in self.outbox)
        ):
            return False
        self.messages[rec.id] = _stored(rec)
        instance = self.instances.get(rec.instance_id)
        if instance is not None:
            instance.last_activity_at = _utc(rec.created_at)
        if event is not None:
            self.events[event.id] = _stored(event)
        if pending is not None:
            self.outbox[pending.id] = _stored(pending)
        return True

    async def update_message_status(
        self, instance_id: str, message_ids: list[str], status: str, at: datetime, from_statuses: list[str]
    ) -> list[MessageRec]:
        at = _utc(at)
        changed = []
        for rec in self.messages.values():
            if (
                rec.instance_id == instance_id
                and rec.message_id in message_ids
                and rec.status in from_statuses
            ):
                rec.status, rec.status_updated_at, rec.updated_at = status, at, at
                changed.append(deepcopy(rec))
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
        chat = (
            m
            for m in self.messages.values()
            if m.instance_id == instance_id
            and m.remote_jid == remote_jid
            and _within(m.timestamp, start, end)
        )
        return _page(chat, lambda m: (m.timestamp, m.id), newest_first=True, skip=skip, limit=limit)

    # Contacts --------------------------------------------------------------------------------

    async def upsert_contact(self, instance_id: str, remote_jid: str, **fields: Any) -> ContactRec:
        """On update every non-``None`` field is set, ``number`` too (as the SQL repository)."""
        now = utcnow()
        changes = {k: v for k, v in fields.items() if v is not None}
        key = (instance_id, remote_jid)
        rec = self.contacts.get(key)
        if rec is not None:
            rec = replace(rec, **changes, updated_at=now)
        else:
            rec = ContactRec(
                id=new_id(),
                instance_id=instance_id,
                remote_jid=remote_jid,
                number=changes.pop("number", None) or remote_jid.split("@", 1)[0],
                created_at=now,
                updated_at=now,
                **changes,
            )
        self.contacts[key] = _stored(rec)
        return deepcopy(self.contacts[key])

    async def list_contacts(
        self, instance_id: str, *, search: str | None, only_groups: bool, skip: int, limit: int
    ) -> tuple[list[ContactRec], int]:
        """Contacts without a name come after the named ones (PostgreSQL's order)."""
        needle = search.lower() if search else None

        def matches(c: ContactRec) -> bool:
            if c.instance_id != instance_id or (only_groups and not c.is_group):
                return False
            return needle is None or any(needle in (v or "").lower() for v in (c.name, c.push_name, c.number))

        return _page(
            filter(matches, self.contacts.values()),
            lambda c: (c.name is None, c.name or "", c.number),
            newest_first=False,
            skip=skip,
            limit=limit,
        )

    # Activity and events ---------------------------------------------------------------------

    async def add_activity(self, rec: ActivityRec) -> None:
        self.activity.setdefault(rec.id, _stored(rec))

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
        logs = (
            a
            for a in self.activity.values()
            if a.instance_id == instance_id
            and (not actions or a.action in actions)
            and _within(a.created_at, start, end)
        )
        return _page(logs, lambda a: (a.created_at, a.id), newest_first=True, skip=skip, limit=limit)

    async def add_event(self, rec: EventRec) -> None:
        self.events.setdefault(rec.id, _stored(rec))

    async def stage_event(self, kept: EventRec | None, pending: OutboxRec) -> None:
        """A taken outbox or event id ignores the whole step (as the SQL transaction)."""
        if pending.id in self.outbox or (kept is not None and kept.id in self.events):
            return
        self.outbox[pending.id] = _stored(pending)
        if kept is not None:
            self.events[kept.id] = _stored(kept)

    async def outbox_due(self, shards: list[int], before: datetime, limit: int) -> list[OutboxRec]:
        due = (e for e in self.outbox.values() if e.shard in shards and e.created_at < _utc(before))
        return _page(due, lambda e: (e.created_at, e.id), newest_first=False, skip=0, limit=limit)[0]

    async def outbox_done(self, ids: list[str]) -> None:
        for event_id in ids:
            self.outbox.pop(event_id, None)

    async def recent_events(
        self, instance_id: str, *, since: datetime | None, types: list[str] | None, limit: int
    ) -> tuple[list[EventRec], bool]:
        after = _utc(since)
        rows = [
            e
            for e in self.events.values()
            if e.instance_id == instance_id
            and (after is None or e.occurred_at > after)
            and (not types or e.type in types)
        ]
        # Without "since" the newest events; with it the oldest after it (continuation).
        page, total = _page(
            rows, lambda e: (e.occurred_at, e.id), newest_first=after is None, skip=0, limit=limit
        )
        if after is not None:
            page.reverse()
        return page, total > limit

    async def prune(self, events_before: datetime, idempotency_before: datetime) -> int:
        old_events = [i for i, e in self.events.items() if e.occurred_at < _utc(events_before)]
        old_keys = [k for k, r in self.idempotency.items() if r.created_at < _utc(idempotency_before)]
        for event_id in old_events:
            del self.events[event_id]
        for key in old_keys:
            del self.idempotency[key]
        return len(old_events) + len(old_keys)

    # Idempotency -----------------------------------------------------------------------------

    async def idempotency_begin(self, instance_id: str, key: str, command: str) -> IdempotencyRec | None:
        existing = self.idempotency.get((instance_id, key))
        if existing is not None:
            return deepcopy(existing)
        self.idempotency[(instance_id, key)] = IdempotencyRec(
            instance_id, key, command, "pending", None, utcnow()
        )
        return None

    async def idempotency_finish(self, instance_id: str, key: str, reply: dict[str, Any] | None) -> None:
        rec = self.idempotency.get((instance_id, key))
        if reply is None:
            self.idempotency.pop((instance_id, key), None)
        elif rec is not None:
            rec.state, rec.reply = "done", deepcopy(reply)
