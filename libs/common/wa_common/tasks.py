"""Background tasks that are kept referenced and whose failures are logged.

``asyncio.create_task`` keeps only a weak reference: a task nobody holds can be garbage
collected mid-flight, and an exception in it is reported only at collection, if ever. The
supervisor holds every task until it ends and logs (and counts) any failure at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from wa_common.logs import get_logger
from wa_common.metrics import BACKGROUND_TASK_FAILURES

log = get_logger(__name__)


class TaskSupervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a referenced task named ``name`` (a bounded label: no ids in it)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            BACKGROUND_TASK_FAILURES.labels(task.get_name()).inc()
            log.error("background task failed", task=task.get_name(), exc_info=exc)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel every task and wait up to ``timeout_s`` for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning("background tasks did not stop in time", tasks=[t.get_name() for t in pending])
