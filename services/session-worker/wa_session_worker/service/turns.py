"""Per-instance order of commands without holding a lock across a whole command (issue 15).

Each command of an instance takes a :class:`Turn` when it arrives (before its first ``await``:
the bus starts one handler task per delivery, in delivery order). A turn's :meth:`Turn.wait`
returns once every earlier turn of the instance has ended; :meth:`Turn.end` ends it (a turn
ended before it waited still ends only after the earlier ones, so the order cannot be skipped).

Most commands wait for their turn at once and end it when done: one command at a time per
instance, as the lock did. A send instead does its store claim first (group-committed with
other commands' writes), then waits for its turn only around the engine send and the
submission of its store record (:mod:`~wa_session_worker.service.messaging`): an instance's
sends reach WhatsApp and its history in acceptance order, while their store writes overlap.

Memory: an instance's entry lives only while one of its turns is not ended (commands naming
random ids leave nothing behind).
"""

from __future__ import annotations

import asyncio
import contextvars
from types import TracebackType


class Turn:
    """One command's place in its instance's order (module docstring)."""

    def __init__(self, turns: InstanceTurns, instance_id: str, previous: asyncio.Future[None] | None):
        self._turns = turns
        self._instance_id = instance_id
        self._previous = previous
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        """Until every earlier turn of the instance has ended."""
        if self._previous is not None and not self._previous.done():
            await asyncio.shield(self._previous)

    def end(self) -> None:
        """End this turn (idempotent); the next one may run once the earlier ones ended too."""
        if self.done.done():
            return
        if self._previous is None or self._previous.done():
            self._finish()
        else:
            self._previous.add_done_callback(lambda _: self._finish())

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        self._turns._release(self._instance_id, self.done)

    async def __aenter__(self) -> Turn:
        await self.wait()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end()


CURRENT_TURN: contextvars.ContextVar[Turn | None] = contextvars.ContextVar("wa_worker_turn", default=None)


class InstanceTurns:
    """The turns of every instance of this worker's shards."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def take(self, instance_id: str) -> Turn:
        """The next turn of ``instance_id`` (call before the command's first ``await``)."""
        turn = Turn(self, instance_id, self._last.get(instance_id))
        self._last[instance_id] = turn.done
        return turn

    def _release(self, instance_id: str, done: asyncio.Future[None]) -> None:
        if self._last.get(instance_id) is done:  # no later turn was taken: forget the instance
            del self._last[instance_id]
