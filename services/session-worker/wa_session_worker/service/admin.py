"""Administration: the cluster view and the store in use (admin queries), deleting a deleted
user's instances, pruning old rows."""

from __future__ import annotations

from datetime import timedelta

from wa_common.bus import EXCHANGE_COMMANDS, Bus, shard_for, shard_queue
from wa_common.bus.router import RequestError
from wa_common.clock import Clock, utcnow
from wa_common.logs import get_logger
from wa_common.schemas import Caller, Command, Query
from wa_common.schemas.cluster import ClusterWorkers, StoreStatus
from wa_common.schemas.session import SessionCommand
from wa_session_worker.repository.base import Repository
from wa_session_worker.service import views
from wa_session_worker.settings import WorkerSettings
from wa_session_worker.shards.leases import LeaseStore

log = get_logger(__name__)

USER_DELETION_DEADLINE = timedelta(hours=1)  # a queued deletion waits for its shard this long


def _require_admin(q: Query) -> None:
    if q.caller is None or not q.caller.is_admin:
        raise RequestError(403, "admin role required")


class Admin:
    def __init__(
        self,
        settings: WorkerSettings,
        repo: Repository,
        bus: Bus,
        leases: LeaseStore,
        *,
        store_url: str,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.bus = bus
        self.leases = leases
        self.store_url = store_url
        self.clock = clock

    async def cluster(self, q: Query) -> ClusterWorkers:
        _require_admin(q)
        now = self.clock().timestamp()  # leases and heartbeats are Unix seconds
        members = await self.leases.members()
        leases = await self.leases.leases()
        ttl = self.settings.lease_ttl_s
        return views.cluster(self.settings.shard_count, members, leases, now=now, lease_ttl_s=ttl)

    async def store_status(self, q: Query) -> StoreStatus:
        _require_admin(q)
        return views.store_status(self.repo.provider, self.store_url)

    async def delete_user_instances(self, user_id: str) -> int:
        """Send a DELETE command for each of ``user_id``'s instances to its shard's owner."""
        recs = await self.repo.list_instances(user_id)
        for rec in recs:
            cmd = Command(
                name=SessionCommand.DELETE_INSTANCE,
                caller=Caller(user_id=user_id, role="user"),
                instance_id=rec.id,
                deadline=self.clock() + USER_DELETION_DEADLINE,
            )
            queue = shard_queue(shard_for(rec.id, self.settings.shard_count))
            await self.bus.publish(EXCHANGE_COMMANDS, queue, cmd.to_bytes(), message_id=cmd.id)
        if recs:
            log.info("instances of a deleted user queued for deletion", count=len(recs))
        return len(recs)

    async def prune(self) -> int:
        """Delete recent events and idempotency keys older than their settings allow."""
        now = self.clock()
        return await self.repo.prune(
            now - timedelta(seconds=self.settings.recent_events_max_age_s),
            now - timedelta(seconds=self.settings.idempotency_ttl_s),
        )
