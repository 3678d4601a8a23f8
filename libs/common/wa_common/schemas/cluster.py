"""Response bodies of the administration routes: the cluster's workers and shards
(``GET /api/admin/workers``) and the stores (``GET /api/db/status``, reference "Database
Management"). The session worker builds the cluster view and its store's status; every service
with a store answers ``store.status`` as :class:`StoreStatus`; the gateway assembles
:class:`DbStatus` and validates both on the way out."""

from __future__ import annotations

from pydantic import Field

from wa_common.schemas.wire import ApiModel, UtcDateTime


class ClusterWorker(ApiModel):
    """One live session worker: where it listens, the shards it holds, the sessions it runs."""

    id: str
    host: str
    port: int
    alive: bool = Field(description="its last heartbeat is within the lease time")
    shards: list[int]
    sessions: int
    started_at: UtcDateTime
    heartbeat_at: UtcDateTime


class ClusterWorkers(ApiModel):
    """The cluster as the shard leases show it."""

    shard_count: int
    workers: list[ClusterWorker] = Field(
        description="each worker: id, shards it holds, sessions it runs, last heartbeat"
    )
    unowned_shards: list[int] = Field(description="shards no live worker holds")
    epochs: dict[str, int] = Field(description="shard → its lease epoch")


class StoreStatus(ApiModel):
    """A service's store (the ``store.status`` answer)."""

    provider: str = Field(examples=["postgresql"])
    url: str = Field(
        description="the store URL with credentials removed", examples=["postgresql://db:5432/wa"]
    )


class DbStatus(StoreStatus):
    """The session worker's store at the top level (as the reference shows), every service's
    store in ``services``."""

    services: dict[str, StoreStatus | None] = Field(
        default_factory=dict, description="service name → its store (null when it did not answer)"
    )
