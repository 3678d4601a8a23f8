"""Group commit: many concurrent callers, one flush (one transaction, one publish) per window.

A bus consumer runs one handler task per delivery (aiormq starts a task per ``Basic.Deliver``, up
to the channel's prefetch). Each handler ``await``s :meth:`GroupCommit.submit` with its item; the
first item of a window schedules a flush on the next loop iteration, so everything submitted in
the same tick, and everything submitted while a flush is running, goes into one call of
``flush(items)``. Under no load a window holds one item and adds no delay (no timer); under load
the window grows by itself to what arrived during the previous flush (capped at ``max_items``).
This is the group commit of databases (PostgreSQL's ``commit_delay`` without the delay).

``flush`` returns one result per item, in order; each caller gets its own. When ``flush`` raises,
every caller of that window gets the exception (a bus handler then lets the delivery be
redelivered: the flush must be idempotent per item, as every store write reached by the bus is).
A result may itself be an ``Exception`` instance: that one caller gets it raised, the others
their results (a per-item failure that must not fail the window).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from wa_common.metrics import BATCH_FLUSH_SECONDS, BATCH_SIZE

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """``await batcher.submit(item) -> result``; see the module docstring.

    ``name`` labels the ``wa_batch_size`` histogram; ``max_items`` caps a window (the rest waits
    for the next one, which starts as soon as this one ends).
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        max_items: int = 256,
    ):
        self._flush = flush
        self._name = name
        self._max = max_items
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next flush and wait for its result (or its exception)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            # One loop iteration lets every handler started in the same tick submit first.
            await asyncio.sleep(0)
            while self._pending:
                window, self._pending = self._pending[: self._max], self._pending[self._max :]
                BATCH_SIZE.labels(self._name).observe(len(window))
                started = time.perf_counter()
                try:
                    results = await self._flush([item for item, _ in window])
                except BaseException as exc:  # every caller of the window gets it
                    for _, future in window:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                finally:
                    BATCH_FLUSH_SECONDS.labels(self._name).observe(time.perf_counter() - started)
                if len(results) != len(window):
                    error = RuntimeError(
                        f"{self._name}: flush returned {len(results)} results for {len(window)}"
                    )
                    for _, future in window:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(window, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running = None
            if self._pending:  # submitted after the loop ended but before this line (cancel)
                for _, future in self._pending:
                    if not future.done():
                        future.set_exception(RuntimeError(f"{self._name}: group commit stopped"))
                self._pending = []
