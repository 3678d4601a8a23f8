"""The settings replica: each instance's webhook settings, kept from ``instance.*`` events.

Event-carried state transfer (DESIGN.md): ``instance.created``/``instance.updated`` carry a
snapshot (the newest ``updatedAt`` wins), ``instance.deleted`` leaves a tombstone that no late
snapshot revives and cancels the instance's pending deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from wa_common.schemas.events import InstanceSnapshot
from wa_webhooks.deliveries import cancel_pending
from wa_webhooks.models import Delivery, Endpoint
from wa_webhooks.store import Store

TOMBSTONE_UPDATED_AT = "9999-12-31T23:59:59.999Z"  # newer than any snapshot


def _parse_iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_newer(incoming: str, stored: str) -> bool:
    """Whether a snapshot stamped ``incoming`` (ISO 8601 ``updatedAt``) replaces one stamped
    ``stored`` (the same stamp too: re-applying a snapshot is harmless)."""
    a, b = _parse_iso(incoming), _parse_iso(stored)
    if a is None or b is None:
        return incoming >= stored
    return a >= b


# Replica columns named as the snapshot's fields (the others are mapped in ``snapshot_row``).
_FROM_SNAPSHOT = ("instance_id", "user_id", "updated_at")
_FROM_SETTINGS = ("notify_received", "notify_sent", "notify_delivery", "notify_read", "max_retries", "secret")
_NOTHING_WANTED = dict(notify_received=False, notify_sent=False, max_retries=0)


def snapshot_row(snap: InstanceSnapshot, *, deleted: bool = False) -> dict[str, Any]:
    """The replica row of a snapshot."""
    ws = snap.webhook_settings
    same = {n: getattr(snap, n) for n in _FROM_SNAPSHOT} | {n: getattr(ws, n) for n in _FROM_SETTINGS}
    renamed = dict(url=snap.webhook_url, enabled=snap.webhook_enabled, retry_interval_ms=ws.retry_interval)
    return same | renamed | {"headers": dict(ws.headers), "deleted": deleted}


def tombstone_row(instance_id: str, user_id: str) -> dict[str, Any]:
    """The replica row of a deleted instance: no URL, nothing enabled or wanted, no secret."""
    snap = InstanceSnapshot(
        instance_id=instance_id, user_id=user_id, name="", updated_at=TOMBSTONE_UPDATED_AT
    )
    return snapshot_row(snap, deleted=True) | _NOTHING_WANTED


class EndpointStore(Store):
    """Reads and writes of the settings replica (``webhook_endpoints``)."""

    async def apply_snapshot(self, snap: InstanceSnapshot) -> bool:
        """Store the snapshot unless a newer one (or a tombstone) is stored; True if applied."""
        values = snapshot_row(snap)
        async with self.sessions.begin() as s:
            current = (
                await s.execute(
                    select(Endpoint).where(Endpoint.instance_id == snap.instance_id).with_for_update()
                )
            ).scalar_one_or_none()
            if current is None:
                await s.execute(self.insert(Endpoint).values(**values).on_conflict_do_nothing())
                return True
            if current.deleted or not is_newer(snap.updated_at, current.updated_at):
                return False
            for key, value in values.items():
                setattr(current, key, value)
            return True

    async def delete_instance(self, instance_id: str, user_id: str) -> int:
        """Tombstone the instance and cancel its pending deliveries; returns how many."""
        async with self.sessions.begin() as s:
            # An upsert: a snapshot of the same instance (or a repeated deletion) being stored
            # concurrently must not make this fail on the primary key.
            await s.execute(
                self.insert(Endpoint)
                .values(**tombstone_row(instance_id, user_id))
                .on_conflict_do_update(
                    index_elements=[Endpoint.instance_id],
                    set_={"deleted": True, "enabled": False, "secret": None},
                )
            )
            result = await s.execute(
                cancel_pending(
                    Delivery.instance_id == instance_id, reason="instance deleted", at=self.clock()
                )
            )
            return int(result.rowcount or 0)

    async def all(self) -> list[Endpoint]:
        """Every row of the replica (tombstones included): what a process loads at start."""
        async with self.sessions() as s:
            return list((await s.execute(select(Endpoint))).scalars())

    async def get(self, instance_id: str) -> Endpoint | None:
        """The instance's settings (a tombstone included), ``None`` when never seen."""
        async with self.sessions() as s:
            return await s.get(Endpoint, instance_id)

    async def get_many(self, instance_ids: Sequence[str]) -> dict[str, Endpoint]:
        """The settings of ``instance_ids`` that are known, by instance id."""
        async with self.sessions() as s:
            rows = (
                await s.execute(select(Endpoint).where(Endpoint.instance_id.in_(list(instance_ids))))
            ).scalars()
            return {e.instance_id: e for e in rows}

    async def of_user(self, user_id: str) -> list[Endpoint]:
        """Live (not deleted) instances of ``user_id`` with webhooks enabled."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Endpoint).where(
                    Endpoint.user_id == user_id, Endpoint.deleted.is_(False), Endpoint.enabled.is_(True)
                )
            )
            return list(rows.scalars())
