"""Per-instance turns (``service/turns.py``): order kept, an early end cannot skip the order,
nothing kept once every turn ended."""

from __future__ import annotations

import asyncio

from wa_session_worker.service.turns import InstanceTurns


async def test_turns_run_in_the_order_they_were_taken() -> None:
    turns = InstanceTurns()
    ran: list[int] = []
    gate = asyncio.Event()

    async def command(n: int) -> None:
        turn = turns.take("i1")  # before the first await, as the router's wrapper does
        if n == 0:
            await gate.wait()  # the first command is slow before its turn
        async with turn:
            ran.append(n)
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(command(n)) for n in range(5)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert ran == []  # all wait for the first one
    gate.set()
    await asyncio.gather(*tasks)
    assert ran == [0, 1, 2, 3, 4]
    assert len(turns) == 0


async def test_an_early_end_waits_for_the_earlier_turns() -> None:
    turns = InstanceTurns()
    first, second, third = turns.take("i1"), turns.take("i1"), turns.take("i1")
    second.end()  # e.g. a duplicate send answered before its turn
    waiting = asyncio.ensure_future(third.wait())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not waiting.done()  # the first turn has not ended: the third may not run
    first.end()
    await asyncio.wait_for(waiting, 1)
    third.end()
    assert len(turns) == 0


async def test_instances_do_not_wait_for_each_other() -> None:
    turns = InstanceTurns()
    turns.take("i1")  # never ended
    other = turns.take("i2")
    await asyncio.wait_for(other.wait(), 1)
    other.end()
    assert len(turns) == 1
