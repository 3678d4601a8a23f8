"""Administration: the cluster and store views, deleting a deleted user's instances, pruning.

Fast tests run the service's parts on the in-memory store (``parts``); the others the worker in
process over the real RabbitMQ (``ctx``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from conftest import wait_for
from wa_common.bus import EXCHANGE_COMMANDS, SERVICE_QUEUES, shard_for, shard_queue
from wa_common.ids import new_id
from wa_common.schemas import Caller, Command, Event
from wa_common.schemas.envelope import utcnow
from wa_common.schemas.session import SessionCommand as C
from wa_common.schemas.session import SessionQuery as Q
from wa_session_worker.service import views

ALICE = Caller(user_id="alice")
ADMIN = Caller(user_id="root", role="admin")


# --- the service's parts -------------------------------------------------------------------------


async def test_a_deleted_users_instances_are_queued_for_deletion(parts: Any) -> None:
    ids = {await parts.instance(), await parts.instance()}
    await parts.instance(Caller(user_id="bob"))
    parts.clock.advance(60)
    assert await parts.worker.admin.delete_user_instances("alice") == 2
    queued = [(key, Command.from_bytes(body)) for key, body in parts.bus.commands]
    assert sorted(c.instance_id or "" for _, c in queued) == sorted(ids)
    for key, command in queued:
        assert command.name == C.DELETE_INSTANCE and command.caller == ALICE
        assert key == shard_queue(shard_for(command.instance_id or "", parts.settings.shard_count))
        assert command.deadline == parts.clock() + timedelta(hours=1)


async def test_prune_keeps_what_is_younger_than_its_settings(parts: Any) -> None:
    iid = await parts.instance()
    assert await parts.worker.admin.prune() == 0
    parts.clock.advance(parts.settings.recent_events_max_age_s + 1)
    assert await parts.worker.admin.prune() >= 1
    assert (await parts.q(Q.EVENTS, iid)).data["events"] == []


async def test_admin_queries_refuse_users_and_hide_credentials(parts: Any) -> None:
    assert (await parts.q(Q.STORE_STATUS, None)).status == 403
    assert (await parts.q(Q.CLUSTER, None)).status == 403
    store = await parts.q(Q.STORE_STATUS, None, caller=ADMIN)
    assert store.data == {"provider": "memory", "url": "memory://"}
    assert (
        views.store_status("postgresql", "postgresql://wa:secret@db:5432/wa").url == "postgresql://db:5432/wa"
    )
    assert (
        views.store_status("mongodb", "mongodb://wa:secret@mongo:27017/wa").url == "mongodb://mongo:27017/wa"
    )


# --- over the bus --------------------------------------------------------------------------------


async def test_user_deleted_removes_instances(ctx: Any) -> None:
    user = Caller(user_id=f"gone-{new_id()}")
    ids = [new_id() for _ in range(3)]
    for iid in ids:
        assert (await ctx.cmd(C.CREATE_INSTANCE, iid, user, {"name": "x"})).status == 201
    event = Event(type="user.deleted", user_id=user.user_id, data={"userId": user.user_id})
    await ctx.bus.publish_event(event)
    assert SERVICE_QUEUES["session-worker"].bindings

    async def gone() -> bool:
        replies = await asyncio.gather(*(ctx.q(Q.GET_INSTANCE, iid, ADMIN) for iid in ids))
        return all(r.status == 404 for r in replies)

    await wait_for(gone, timeout_s=10, message="instances of a deleted user deleted")


async def test_admin_queries_and_expired_commands(ctx: Any) -> None:
    assert (await ctx.q(Q.CLUSTER, None, ALICE)).status == 403
    view = (await ctx.q(Q.CLUSTER, None, ADMIN)).data
    assert view["shardCount"] == ctx.S and view["workers"][0]["shards"] == list(range(ctx.S))
    store = (await ctx.q(Q.STORE_STATUS, None, ADMIN)).data
    assert store["provider"] == "sqlite"
    # A command whose deadline passed while queued is dropped, not executed.
    iid = new_id()
    late = Command(
        name=C.CREATE_INSTANCE,
        caller=ALICE,
        instance_id=iid,
        payload={"name": "late"},
        deadline=utcnow() - timedelta(seconds=1),
    )
    await ctx.bus.publish(EXCHANGE_COMMANDS, shard_queue(shard_for(iid, ctx.S)), late.to_bytes())
    marker = new_id()
    while shard_for(marker, ctx.S) != shard_for(iid, ctx.S):  # same queue: handled after the late one
        marker = new_id()
    assert (await ctx.cmd(C.CREATE_INSTANCE, marker, ALICE, {"name": "marker"})).status == 201
    assert (await ctx.q(Q.GET_INSTANCE, iid, ADMIN)).status == 404
