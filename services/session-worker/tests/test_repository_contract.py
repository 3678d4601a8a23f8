"""One contract for every repository implementation (SQLite, PostgreSQL, MongoDB when set, and the
in-memory one)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone

from wa_common.ids import new_id
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import ActivityRec, EventRec, InstanceRec, MessageRec, OutboxRec

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def instance(user: str = "u1", shard: int = 3) -> InstanceRec:
    return InstanceRec(
        id=new_id(),
        user_id=user,
        name="Primary",
        shard=shard,
        status="connecting",
        created_at=T0,
        updated_at=T0,
        webhook_settings={"notifyReceived": True, "headers": {"X": "1"}},
    )


def message(
    instance_id: str, jid: str, minutes: int, status: str = "sent", from_me: bool = True
) -> MessageRec:
    at = T0 + timedelta(minutes=minutes)
    return MessageRec(
        id=new_id(),
        instance_id=instance_id,
        message_id=f"3EB0{new_id()}",
        remote_jid=jid,
        from_me=from_me,
        message_type="text",
        status=status,
        timestamp=at,
        created_at=at,
        updated_at=at,
        content=f"m{minutes}",
        metadata={"timestamp": int(at.timestamp())},
    )


async def test_instances_roundtrip_and_isolation(repo: Repository) -> None:
    a, b = instance("alice"), instance("bob", shard=5)
    assert await repo.create_instance(a)
    assert not await repo.create_instance(a), "a second create with the same id must be refused"
    await repo.create_instance(b)
    got = await repo.get_instance(a.id)
    assert got is not None and got.name == "Primary" and got.created_at == T0
    assert got.created_at.tzinfo is not None
    assert got.webhook_settings == {"notifyReceived": True, "headers": {"X": "1"}}
    assert [r.id for r in await repo.list_instances("alice")] == [a.id]
    assert {a.id, b.id} <= {r.id for r in await repo.list_instances(None)}
    assert b.id in [r.id for r in await repo.instances_in_shard(5)]
    updated = await repo.update_instance(
        a.id, status="connected", device_jid="1@s.whatsapp.net", device_data={"k": 1}
    )
    assert updated is not None and updated.status == "connected" and updated.device_data == {"k": 1}
    assert await repo.update_instance("missing") is None


async def test_delete_removes_everything(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    await repo.add_message(message(rec.id, "1@s.whatsapp.net", 1))
    await repo.upsert_contact(rec.id, "1@s.whatsapp.net", at=T0, name="A")
    await repo.add_activity(ActivityRec(new_id(), rec.id, "connected", {}, T0))
    await repo.add_event(EventRec(new_id(), rec.id, "connected", T0, {}))
    assert await repo.delete_instance(rec.id)
    assert await repo.get_instance(rec.id) is None
    assert (await repo.chat_messages(rec.id, "1@s.whatsapp.net", start=None, end=None, skip=0, limit=10))[
        1
    ] == 0
    assert (await repo.list_contacts(rec.id, search=None, only_groups=False, skip=0, limit=10))[1] == 0
    assert not await repo.delete_instance(rec.id)


async def test_messages_history_dedup_and_status(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    jid, other = "79001234567@s.whatsapp.net", "79007654321@s.whatsapp.net"
    msgs = [message(rec.id, jid, i) for i in range(5)]
    for msg in msgs:
        assert await repo.add_message(msg)
    await repo.add_message(message(rec.id, other, 9))
    duplicate = message(rec.id, jid, 7)
    duplicate.message_id = msgs[0].message_id
    assert not await repo.add_message(duplicate), "(instance, message id) is unique"

    page, total = await repo.chat_messages(rec.id, jid, start=None, end=None, skip=1, limit=2)
    assert total == 5 and [m.content for m in page] == ["m3", "m2"], "newest first, skip/limit"
    span, total = await repo.chat_messages(
        rec.id, jid, start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3), skip=0, limit=10
    )
    assert total == 3 and [m.content for m in span] == ["m3", "m2", "m1"]

    at = T0 + timedelta(hours=1)
    changed = await repo.update_message_status(
        rec.id, [msgs[0].message_id], "read", at, ["sent", "delivered"]
    )
    assert [m.message_id for m in changed] == [msgs[0].message_id] and changed[0].status == "read"
    late = await repo.update_message_status(rec.id, [msgs[0].message_id], "delivered", at, ["sent"])
    assert late == [], "a late delivered receipt must not overwrite read"
    page, _ = await repo.chat_messages(rec.id, jid, start=None, end=None, skip=4, limit=1)
    assert page[0].status == "read" and page[0].status_updated_at == at


async def test_contacts_upsert_search_groups(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    first = await repo.upsert_contact(
        rec.id, "79001234567@s.whatsapp.net", at=T0, name="John Doe", push_name="John"
    )
    later = T0 + timedelta(minutes=1)
    again = await repo.upsert_contact(rec.id, "79001234567@s.whatsapp.net", at=later, about="hi", name=None)
    assert (
        again.id == first.id
        and again.name == "John Doe"
        and again.about == "hi"
        and again.number == "79001234567"
    )
    assert (first.created_at, again.created_at, again.updated_at) == (T0, T0, later)
    await repo.upsert_contact(rec.id, "79005550000@s.whatsapp.net", at=T0, name="Mary")
    await repo.upsert_contact(rec.id, "12345@g.us", at=T0, name="Work Group", is_group=True)

    found, total = await repo.list_contacts(rec.id, search="joh", only_groups=False, skip=0, limit=10)
    assert total == 1 and found[0].name == "John Doe"
    found, total = await repo.list_contacts(rec.id, search="555", only_groups=False, skip=0, limit=10)
    assert total == 1 and found[0].name == "Mary"
    found, total = await repo.list_contacts(rec.id, search="100%", only_groups=False, skip=0, limit=10)
    assert total == 0, "LIKE wildcards in the search are literal"
    groups, total = await repo.list_contacts(rec.id, search=None, only_groups=True, skip=0, limit=10)
    assert total == 1 and groups[0].is_group
    page, total = await repo.list_contacts(rec.id, search=None, only_groups=False, skip=1, limit=1)
    assert total == 3 and len(page) == 1


async def test_activity_filters(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    for i, action in enumerate(["qr_received", "connected", "disconnected", "connected"]):
        await repo.add_activity(ActivityRec(new_id(), rec.id, action, {"i": i}, T0 + timedelta(minutes=i)))
    logs, total = await repo.list_activity(
        rec.id, actions=["connected"], start=None, end=None, skip=0, limit=10
    )
    assert total == 2 and [r.details["i"] for r in logs] == [3, 1]
    logs, total = await repo.list_activity(
        rec.id, actions=None, start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=2), skip=0, limit=10
    )
    assert total == 2 and [r.action for r in logs] == ["disconnected", "connected"]


async def test_recent_events_and_prune(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    for i in range(5):
        kind = "message_received" if i % 2 else "message_sent"
        await repo.add_event(EventRec(new_id(), rec.id, kind, T0 + timedelta(seconds=i), {"i": i}))
    events, more = await repo.recent_events(rec.id, since=None, types=None, limit=2)
    assert [e.data["i"] for e in events] == [4, 3] and more
    events, more = await repo.recent_events(
        rec.id, since=T0 + timedelta(seconds=1), types=["message_sent"], limit=10
    )
    assert [e.data["i"] for e in events] == [4, 2] and not more
    # With "since", a page too small holds the oldest events after it (newest first): a caller
    # continuing from the newest time it got sees the rest next.
    events, more = await repo.recent_events(rec.id, since=T0, types=None, limit=2)
    assert [e.data["i"] for e in events] == [2, 1] and more
    events, more = await repo.recent_events(rec.id, since=events[0].occurred_at, types=None, limit=2)
    assert [e.data["i"] for e in events] == [4, 3] and not more
    await repo.prune(T0 + timedelta(seconds=3), T0 - timedelta(days=1))
    events, _ = await repo.recent_events(rec.id, since=None, types=None, limit=10)
    assert [e.data["i"] for e in events] == [4, 3]


async def test_idempotency(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    assert await repo.idempotency_begin(rec.id, "k1", "message.send_text", at=T0) is None
    pending = await repo.idempotency_begin(rec.id, "k1", "message.send_text", at=T0)
    assert pending is not None and pending.state == "pending" and pending.created_at == T0
    await repo.idempotency_finish(rec.id, "k1", {"ok": True, "data": {"id": "X"}})
    done = await repo.idempotency_begin(rec.id, "k1", "message.send_text", at=T0)
    assert done is not None and done.state == "done" and done.reply == {"ok": True, "data": {"id": "X"}}
    assert await repo.idempotency_begin(rec.id, "k2", "message.send_text", at=T0) is None
    await repo.idempotency_finish(rec.id, "k2", None)
    assert await repo.idempotency_begin(rec.id, "k2", "message.send_text", at=T0) is None, (
        "a forgotten key may run again"
    )


async def test_record_message_is_all_or_nothing(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    msg = message(rec.id, "1@s.whatsapp.net", 30)
    assert await repo.record_message(msg, EventRec(new_id(), rec.id, "message_sent", T0, {"n": 1}))
    dup = message(rec.id, "1@s.whatsapp.net", 31)
    dup.message_id = msg.message_id
    assert not await repo.record_message(dup, EventRec(new_id(), rec.id, "message_sent", T0, {"n": 2}))
    events, _ = await repo.recent_events(rec.id, since=None, types=None, limit=10)
    assert [e.data["n"] for e in events] == [1], "a duplicate message keeps no event"
    touched = await repo.get_instance(rec.id)
    assert touched is not None and touched.last_activity_at == msg.created_at


async def test_outbox_entries_commit_with_their_change_and_wait_for_the_relay(repo: Repository) -> None:
    shard, other = 10_000 + secrets.randbelow(10**6), 20_000_000 + secrets.randbelow(10**6)
    rec = instance(shard=shard)
    await repo.create_instance(rec)

    def entry(at: datetime, on: int = shard) -> OutboxRec:
        return OutboxRec(new_id(), on, '{"type": "x"}', at)

    # A message and its entry are stored together; a duplicate message stores no entry.
    msg = message(rec.id, "1@s.whatsapp.net", 1)
    first = entry(T0)
    assert await repo.record_message(msg, None, first)
    dup = message(rec.id, "1@s.whatsapp.net", 2)
    dup.message_id = msg.message_id
    assert not await repo.record_message(dup, None, entry(T0 + timedelta(seconds=1)))
    # Staged events (with or without a recent-event row); a repeated id is ignored.
    second = entry(T0 + timedelta(seconds=2))
    kept = EventRec(second.id, rec.id, "connected", T0, {"n": 2})
    await repo.stage_event(kept, second)
    await repo.stage_event(kept, second)
    third = entry(T0 + timedelta(seconds=3))
    await repo.stage_event(None, third)
    elsewhere = entry(T0, on=other)
    await repo.stage_event(None, elsewhere)
    events, _ = await repo.recent_events(rec.id, since=None, types=["connected"], limit=10)
    assert [e.id for e in events] == [second.id]

    due = await repo.outbox_due([shard], T0 + timedelta(seconds=2, milliseconds=500), 10)
    assert [e.id for e in due] == [first.id, second.id], "oldest first, only older than the cut"
    assert due[0].body == '{"type": "x"}' and due[0].shard == shard and due[0].created_at == T0
    assert [e.id for e in await repo.outbox_due([shard], T0 + timedelta(hours=1), 2)] == [first.id, second.id]
    assert [e.id for e in await repo.outbox_due([other], T0 + timedelta(hours=1), 10)] == [elsewhere.id]
    assert await repo.outbox_due([], T0 + timedelta(hours=1), 10) == []

    await repo.outbox_done([first.id, second.id, "no-such-id"])
    assert [e.id for e in await repo.outbox_due([shard], T0 + timedelta(hours=1), 10)] == [third.id]
    # Deleting the instance keeps its pending events (instance.deleted among them).
    await repo.delete_instance(rec.id)
    assert [e.id for e in await repo.outbox_due([shard], T0 + timedelta(hours=1), 10)] == [third.id]


async def test_times_read_back_aware_utc(repo: Repository) -> None:
    """Whatever zone a caller's aware time is in, a record holds (and returns) it in UTC."""
    plus3 = timezone(timedelta(hours=3))
    rec = instance()
    rec.created_at = T0.astimezone(plus3)
    await repo.create_instance(rec)
    got = await repo.get_instance(rec.id)
    assert got is not None and got.created_at == T0 and got.created_at.utcoffset() == timedelta(0)
    msg = message(rec.id, "1@s.whatsapp.net", 1)
    await repo.add_message(msg)
    at = (T0 + timedelta(hours=1)).astimezone(plus3)
    changed = await repo.update_message_status(rec.id, [msg.message_id], "read", at, ["sent"])
    assert changed[0].status_updated_at == at and changed[0].status_updated_at.utcoffset() == timedelta(0)


async def test_instances_oldest_first_and_updates_without_changes(repo: Repository) -> None:
    user = f"u-{new_id()}"
    recs = [instance(user) for _ in range(3)]
    for rec, minutes in zip(recs, (2, 0, 1), strict=True):
        rec.created_at = T0 + timedelta(minutes=minutes)
        await repo.create_instance(rec)
    assert [r.id for r in await repo.list_instances(user)] == [recs[1].id, recs[2].id, recs[0].id]
    same = await repo.update_instance(recs[0].id)
    assert same is not None and same.status == "connecting" and same.created_at == T0 + timedelta(minutes=2)
    assert await repo.update_message_status(recs[0].id, [], "read", T0, ["sent"]) == []
    await repo.outbox_done([])
    assert await repo.instances_in_shard(-1) == []


async def test_contacts_order_number_and_paging(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    for jid, name in [("3@s.whatsapp.net", "Bea"), ("2@s.whatsapp.net", "Ann"), ("1@s.whatsapp.net", "Bea")]:
        await repo.upsert_contact(rec.id, jid, at=T0, name=name)
    page, total = await repo.list_contacts(rec.id, search=None, only_groups=False, skip=0, limit=10)
    assert total == 3 and [(c.name, c.number) for c in page] == [("Ann", "2"), ("Bea", "1"), ("Bea", "3")]
    renumbered = await repo.upsert_contact(rec.id, "1@s.whatsapp.net", at=T0, number="100")
    assert renumbered.number == "100" and renumbered.name == "Bea", "a given number is set on update too"
    page, total = await repo.list_contacts(rec.id, search="bea", only_groups=False, skip=1, limit=1)
    assert total == 2 and [c.number for c in page] == ["3"]


async def test_activity_pages_and_repeated_ids(repo: Repository) -> None:
    rec = instance()
    await repo.create_instance(rec)
    first = ActivityRec(new_id(), rec.id, "connected", {"i": 0}, T0)
    await repo.add_activity(first)
    await repo.add_activity(first)  # a repeated id is ignored
    for i in range(1, 4):
        await repo.add_activity(
            ActivityRec(new_id(), rec.id, "connected", {"i": i}, T0 + timedelta(minutes=i))
        )
    logs, total = await repo.list_activity(rec.id, actions=None, start=None, end=None, skip=1, limit=2)
    assert total == 4 and [r.details["i"] for r in logs] == [2, 1]


async def test_steps_with_a_taken_id_write_nothing(repo: Repository) -> None:
    shard = 30_000_000 + secrets.randbelow(10**6)
    rec = instance(shard=shard)
    await repo.create_instance(rec)
    staged = OutboxRec(new_id(), shard, "{}", T0)
    await repo.stage_event(None, staged)
    # A message whose outbox entry id is taken is not stored (nor its event).
    msg = message(rec.id, "1@s.whatsapp.net", 1)
    assert not await repo.record_message(msg, EventRec(new_id(), rec.id, "message_sent", T0, {}), staged)
    assert (await repo.chat_messages(rec.id, "1@s.whatsapp.net", start=None, end=None, skip=0, limit=9))[
        1
    ] == 0
    assert (await repo.recent_events(rec.id, since=None, types=None, limit=9))[0] == []
    # An event whose recent-event row is kept already is not staged again.
    kept = EventRec(new_id(), rec.id, "connected", T0, {})
    await repo.add_event(kept)
    await repo.stage_event(kept, OutboxRec(kept.id, shard, "{}", T0))
    assert [e.id for e in await repo.outbox_due([shard], T0 + timedelta(hours=1), 10)] == [staged.id]


async def test_prune_counts_what_it_deleted(repo: Repository) -> None:
    # Far older than any other test's rows: a store shared with tests running at the same time
    # loses only this test's event.
    rec = instance()
    await repo.create_instance(rec)
    ancient = T0 - timedelta(days=4000)
    await repo.add_event(EventRec(new_id(), rec.id, "connected", ancient, {}))
    later = T0 + timedelta(days=1)  # after the cut of test_recent_events_and_prune too
    await repo.add_event(EventRec(new_id(), rec.id, "connected", later, {}))
    assert await repo.prune(ancient + timedelta(seconds=1), ancient) >= 1
    events, _ = await repo.recent_events(rec.id, since=None, types=None, limit=10)
    assert [e.occurred_at for e in events] == [later]
