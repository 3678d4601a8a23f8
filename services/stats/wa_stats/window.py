"""One window of events being counted: its transaction (:class:`~wa_stats.limits.Unit`), the
counters summed so far (:class:`~wa_stats.tally.Tally`) and the instances read so far.

Instances are read in bulk (:meth:`Window.instances`: one query for every id not read yet) and
kept for the window; a replica write of an instance forgets it (:meth:`Window.changed`), so a
later event of the window reads what that write left, as it would have one event at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from wa_stats.limits import Unit
from wa_stats.repository import InstanceInfo, ReplicaRepository
from wa_stats.tally import Tally


class Window:
    """The state of one window's transaction (see the module docstring)."""

    def __init__(self, unit: Unit, replicas: ReplicaRepository) -> None:
        self.unit = unit
        self.tally = Tally()
        self._replicas = replicas
        self._instances: dict[str, InstanceInfo | None] = {}

    @property
    def conn(self) -> AsyncConnection:
        return self.unit.conn

    async def instances(self, ids: Iterable[str]) -> dict[str, InstanceInfo]:
        """The instances stats knows among ``ids`` (``""`` ignored), by id; one query for those
        not read yet in this window."""
        wanted = {i for i in ids if i}
        missing = sorted(i for i in wanted if i not in self._instances)
        if missing:
            found = await self._replicas.instances_named(self.conn, missing)
            self._instances.update({i: found.get(i) for i in missing})
        return {i: info for i in wanted if (info := self._instances.get(i)) is not None}

    def changed(self, instance_id: str) -> None:
        """``instance_id``'s replica was written: read it again when it is next asked for."""
        self._instances.pop(instance_id, None)
