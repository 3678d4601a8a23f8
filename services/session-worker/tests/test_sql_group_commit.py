"""The SQL repository's group commit (``repository/sql.py``): concurrent write steps share one
transaction, a taken key fails only its own step, and a failing step is isolated (PostgreSQL and
SQLite, the real stores)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from wa_common.db import create_engine
from wa_common.ids import new_id
from wa_session_worker.repository.records import EventRec, InstanceRec, MessageRec, OutboxRec
from wa_session_worker.repository.sql import SqlRepository

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest) -> str:
    """A migrated store of each SQL kind (looked up in a plain fixture: migrating runs its own
    event loop)."""
    url: str = request.getfixturevalue("worker_sqlite_url" if request.param == "sqlite" else "worker_pg_url")
    return url


STATEMENTS: list[str] = []


@pytest.fixture
async def sql(sql_url: str) -> AsyncIterator[tuple[SqlRepository, list[int]]]:
    """A repository on a migrated store, and a list that counts the transactions begun on it
    (:data:`STATEMENTS` records the statements executed)."""
    url = sql_url
    engine = create_engine(url)
    begun: list[int] = []
    event.listen(engine.sync_engine, "begin", lambda conn: begun.append(1))
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda conn, cursor, stmt, *_: STATEMENTS.append(stmt)
    )
    repo = SqlRepository(engine, url)
    await repo.create_instance(
        InstanceRec(
            id=(iid := new_id()),
            user_id="u1",
            name="gc",
            shard=1,
            status="created",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    repo.test_instance_id = iid  # type: ignore[attr-defined]
    yield repo, begun
    await repo.delete_instance(iid)
    await engine.dispose()


def message(instance_id: str, message_id: str) -> MessageRec:
    return MessageRec(
        id=new_id(),
        instance_id=instance_id,
        message_id=message_id,
        remote_jid="79001234567@s.whatsapp.net",
        from_me=True,
        message_type="text",
        status="sent",
        timestamp=NOW,
        created_at=NOW,
        updated_at=NOW,
        content="hi",
    )


async def test_concurrent_steps_share_a_transaction(sql: tuple[SqlRepository, list[int]]) -> None:
    repo, begun = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    begun.clear()
    results = await asyncio.gather(*(repo.add_message(message(iid, f"M{n}")) for n in range(40)))
    assert results == [True] * 40
    assert len(begun) < 10, f"40 concurrent inserts took {len(begun)} transactions"
    _page, total = await repo.chat_messages(
        iid, "79001234567@s.whatsapp.net", start=None, end=None, skip=0, limit=100
    )
    assert total == 40


async def test_a_taken_key_fails_only_its_own_step(sql: tuple[SqlRepository, list[int]]) -> None:
    repo, _ = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    assert await repo.add_message(message(iid, "DUP"))
    outbox_id = new_id()
    event_id = new_id()
    first = repo.record_message(
        message(iid, "DUP"),
        EventRec(event_id, iid, "message_sent", NOW, {}),
        OutboxRec(outbox_id, 1, "{}", NOW),
    )
    others = [repo.add_message(message(iid, f"N{n}")) for n in range(5)]
    results = await asyncio.gather(first, *others)
    assert results == [False, True, True, True, True, True]
    # Nothing of the refused step stayed written: its outbox entry (inserted before the
    # message) was removed in the same transaction, its event never written.
    assert outbox_id not in [e.id for e in await repo.outbox_due([1], datetime(2100, 1, 1, tzinfo=UTC), 1000)]
    kept, _ = await repo.recent_events(iid, since=None, types=None, limit=100)
    assert event_id not in [e.id for e in kept]


async def test_a_failing_step_is_isolated(sql: tuple[SqlRepository, list[int]]) -> None:
    repo, _ = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    bad = message(iid, "BAD")
    bad.message_type = None  # type: ignore[assignment]  # NOT NULL: the store refuses it
    results = await asyncio.gather(
        repo.add_message(bad),
        *(repo.add_message(message(iid, f"G{n}")) for n in range(5)),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception)
    assert results[1:] == [True] * 5
    _, total = await repo.chat_messages(
        iid, "79001234567@s.whatsapp.net", start=None, end=None, skip=0, limit=100
    )
    assert total == 5


async def test_a_window_of_sends_takes_a_few_statements(sql: tuple[SqlRepository, list[int]]) -> None:
    """30 records (message, recent event, outbox entry, instance touch, idempotency reply) in one
    window: one multi-row insert per table and one executemany per follow-up shape, not 150
    statements."""
    repo, _ = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    for n in range(30):
        assert await repo.idempotency_begin(iid, f"k{n}", "send_text", at=NOW) is None
    STATEMENTS.clear()
    results = await asyncio.gather(
        *(
            repo.record_message(
                message(iid, f"W{n}"),
                EventRec(new_id(), iid, "message_sent", NOW, {}),
                OutboxRec(new_id(), 1, "{}", NOW),
                idempotency=(f"k{n}", {"status": 200}),
            )
            for n in range(30)
        )
    )
    assert results == [True] * 30
    writes = [st for st in STATEMENTS if not st.lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT"))]
    assert len(writes) <= 10, writes
    for n in range(30):
        done = await repo.idempotency_begin(iid, f"k{n}", "send_text", at=NOW)
        assert done is not None and done.state == "done" and done.reply == {"status": 200}


async def test_a_key_released_and_claimed_in_one_window_keeps_that_order(
    sql: tuple[SqlRepository, list[int]],
) -> None:
    repo, _ = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    assert await repo.idempotency_begin(iid, "again", "send_text", at=NOW) is None
    _, claimed = await asyncio.gather(
        repo.idempotency_finish(iid, "again", None), repo.idempotency_begin(iid, "again", "send_text", at=NOW)
    )
    assert claimed is None  # released first, so the claim is new


async def test_the_same_key_twice_in_a_window_first_wins(sql: tuple[SqlRepository, list[int]]) -> None:
    repo, _ = sql
    iid = repo.test_instance_id  # type: ignore[attr-defined]
    first, second = await asyncio.gather(
        repo.add_message(message(iid, "TWICE")), repo.add_message(message(iid, "TWICE"))
    )
    assert (first, second) == (True, False)
