"""Group commit (``wa_common.batching``) and the event batch format (``wa_common.bus.batches``)."""

from __future__ import annotations

import asyncio

import pytest

from wa_common.batching import GroupCommit
from wa_common.bus import batches
from wa_common.schemas import Event


async def test_concurrent_submits_share_a_flush_and_get_their_own_results() -> None:
    windows: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int | BaseException]:
        windows.append(items)
        if len(windows) == 1:
            await release.wait()  # the first window is slow: the next ones pile up meanwhile
        return [ValueError(f"odd {i}") if i == 7 else i * 10 for i in items]

    batcher: GroupCommit[int, int] = GroupCommit(flush, name="test", max_items=4)
    first = asyncio.ensure_future(batcher.submit(0))
    for _ in range(3):
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 10)]
    for _ in range(3):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert windows == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]  # in order, at most max_items
    assert [r for i, r in enumerate(results) if i != 7] == [i * 10 for i in range(10) if i != 7]
    assert isinstance(results[7], ValueError)  # one item's failure is its own


async def test_a_failing_flush_fails_every_caller_of_its_window_only() -> None:
    calls = 0

    async def flush(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return items

    batcher: GroupCommit[str, str] = GroupCommit(flush, name="test")
    failed = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in failed)
    assert await batcher.submit("c") == "c"


def test_a_batch_body_keeps_each_events_bytes_id_and_key() -> None:
    events = [
        Event(type="message_sent", instance_id=f"i{n}", data={"text": "two\nlines €"}) for n in range(3)
    ]
    parts = batches.decode(batches.encode(events))
    assert [(p.id, p.routing_key, Event.from_bytes(p.body)) for p in parts] == [
        (e.id, e.routing_key, e) for e in events
    ]
    with pytest.raises(ValueError):
        batches.decode(b"not a batch")


def test_batches_are_per_type_in_order_and_bounded() -> None:
    types = ["a", "b", "a", "a", "b", "a"]
    events = [Event(type=t, instance_id="i", data={"n": n}) for n, t in enumerate(types)]
    groups = batches.by_type(events, max_size=2)
    assert [[e.data["n"] for e in g] for g in groups] == [[0, 2], [1, 4], [3, 5]]
