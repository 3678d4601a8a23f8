"""The assembled service (``wa_stats.service``): maintenance."""

from __future__ import annotations

from services.stats.tests.support import Local, message
from wa_common.ids import new_id
from wa_common.schemas import EventType
from wa_stats.counting import COUNTED


async def test_prune_forgets_old_ids(local: Local) -> None:
    event = message(EventType.MESSAGE_RECEIVED, f"u{new_id()}", new_id(), local.clock())
    assert await local.handle(event) == COUNTED
    local.clock.advance(8 * 86400)
    pruned, _ = await local.service.prune()
    assert pruned >= 1
