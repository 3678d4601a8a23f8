"""The settings replica in memory: each instance's webhook settings, without a store lookup per event.

Loaded from ``webhook_endpoints`` at start (:meth:`EndpointReplica.load`) and kept current by
the same ``instance.*`` events that change the stored replica (the event consumer applies them
here before the store; a fan-out subscription brings every process the events another replica
consumed). The same rules as the store: the newest ``updatedAt`` wins and a tombstone is final,
so applying events and rows in any order, or twice, converges. An instance not known here yet
(its snapshot still on its way) is looked up in the store once and kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from wa_common.schemas.events import InstanceSnapshot
from wa_webhooks.endpoints import EndpointStore, is_newer, snapshot_row, tombstone_row
from wa_webhooks.models import Endpoint


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One instance's webhook settings (the columns of :class:`~wa_webhooks.models.Endpoint`).

    ``retry_interval_ms`` in milliseconds; ``updated_at`` the snapshot's ISO 8601 ``updatedAt``;
    ``deleted`` a tombstone.
    """

    instance_id: str
    user_id: str
    url: str | None
    enabled: bool
    notify_received: bool
    notify_sent: bool
    notify_delivery: bool
    notify_read: bool
    max_retries: int
    retry_interval_ms: int
    secret: str | None
    headers: dict[str, Any]
    updated_at: str
    deleted: bool

    @classmethod
    def of(cls, row: Endpoint) -> EndpointView:
        """The view of a stored row."""
        return cls(**{name: getattr(row, name) for name in _FIELDS})

    @property
    def live(self) -> bool:
        """Whether anything can be sent to it: webhooks enabled, a URL, not deleted."""
        return self.enabled and bool(self.url) and not self.deleted


_FIELDS = tuple(f.name for f in fields(EndpointView))


class EndpointReplica:
    """``instance id → EndpointView`` in memory, backed by ``store`` for instances not seen yet."""

    def __init__(self, store: EndpointStore) -> None:
        self._store = store
        self._by_id: dict[str, EndpointView] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, instance_id: str) -> EndpointView | None:
        """The settings held in memory (a tombstone included), ``None`` when not known here."""
        return self._by_id.get(instance_id)

    def apply(self, view: EndpointView) -> bool:
        """Keep ``view`` unless a newer one or a tombstone is held; True if it was kept."""
        current = self._by_id.get(view.instance_id)
        if current is not None and (
            current.deleted or (not view.deleted and not is_newer(view.updated_at, current.updated_at))
        ):
            return False
        self._by_id[view.instance_id] = view
        return True

    def apply_snapshot(self, snap: InstanceSnapshot) -> bool:
        """Apply an ``instance.created``/``instance.updated`` snapshot; True if it was kept."""
        return self.apply(EndpointView(**snapshot_row(snap)))

    def tombstone(self, instance_id: str, user_id: str) -> None:
        """Apply ``instance.deleted``: nothing is sent to the instance any more."""
        current = self._by_id.get(instance_id)
        if current is None:
            self._by_id[instance_id] = EndpointView(**tombstone_row(instance_id, user_id))
        elif not current.deleted:
            self._by_id[instance_id] = replace(current, deleted=True, enabled=False, secret=None)

    def apply_rows(self, rows: Iterable[Endpoint]) -> None:
        """Apply stored rows (newest wins, as for events)."""
        for row in rows:
            self.apply(EndpointView.of(row))

    async def load(self) -> int:
        """Apply every stored row; returns how many instances are held. Raises the store's errors."""
        self.apply_rows(await self._store.all())
        return len(self._by_id)

    async def lookup(self, instance_id: str) -> EndpointView | None:
        """The instance's settings from memory, else from the store (then kept); ``None`` when
        the instance was never seen. Raises the store's errors."""
        view = self._by_id.get(instance_id)
        if view is None:
            row = await self._store.get(instance_id)
            if row is not None:
                self.apply(EndpointView.of(row))
                view = self._by_id.get(instance_id)
        return view

    async def lookup_many(self, instance_ids: Sequence[str]) -> dict[str, EndpointView]:
        """:meth:`lookup` of several instances (one store query for those not in memory)."""
        found = {iid: v for iid in instance_ids if (v := self._by_id.get(iid)) is not None}
        missing = [iid for iid in instance_ids if iid not in found]
        if missing:
            self.apply_rows((await self._store.get_many(missing)).values())
            found |= {iid: v for iid in missing if (v := self._by_id.get(iid)) is not None}
        return found

    async def of_user(self, user_id: str) -> list[EndpointView]:
        """Live instances of ``user_id`` (from the store: memory may not know every one yet;
        rows are kept, a newer view held in memory wins)."""
        rows = await self._store.of_user(user_id)
        self.apply_rows(rows)
        views = (self._by_id.get(row.instance_id) for row in rows)
        return [v for v in views if v is not None and v.live]
