"""The webhook dispatcher's test harness: the dispatcher in-process on the real broker and store,
with a test-side bus client that plays the session worker and the gateway.

Webhook receivers are the shared :class:`tests.support.http.HttpServer` (fixture
``http_servers``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wa_common.bus import EXCHANGE_COMMANDS, WEBHOOKS_QUERY_QUEUE, Bus, RpcClient
from wa_common.ids import new_id
from wa_common.migrations import upgrade
from wa_common.schemas import Caller, Command, Event, Query, Reply
from wa_common.schemas.events import InstanceSnapshot, WebhookSettings
from wa_webhooks.outbox import Dispatcher
from wa_webhooks.settings import WebhooksSettings


def make_settings(amqp_url: str, database_url: str, **overrides: Any) -> WebhooksSettings:
    values: dict[str, Any] = dict(
        amqp_url=amqp_url,
        database_url=database_url,
        profile="embedded",
        allow_private_targets=True,
        attempt_timeout_s=2.0,
        poll_interval_s=0.1,
        lease_s=5.0,
        retry_jitter=0.05,
        per_host_concurrency=4,
        port=0,
    )
    values.update(overrides)
    return WebhooksSettings(**values)


@dataclass
class Stack:
    dispatcher: Dispatcher
    bus: Bus
    rpc: RpcClient
    user_id: str = "user-1"

    async def create_instance(self, url: str | None, *, user_id: str | None = None, **ws: Any) -> str:
        """Publish instance.created (as the session worker would) and wait for the replica."""
        instance_id = new_id()
        await self.update_instance(instance_id, url, user_id=user_id, **ws)
        return instance_id

    async def update_instance(
        self,
        instance_id: str,
        url: str | None,
        *,
        user_id: str | None = None,
        enabled: bool = True,
        **ws: Any,
    ) -> None:
        updated_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        snap = InstanceSnapshot(
            instance_id=instance_id,
            user_id=user_id or self.user_id,
            name="test",
            webhook_url=url,
            webhook_enabled=enabled,
            webhook_settings=WebhookSettings(**ws),
            updated_at=updated_at,
        )
        await self.bus.publish_event(
            Event(type="instance.updated", instance_id=instance_id, user_id=snap.user_id, data=snap.dump())
        )

        async def applied() -> bool:
            ep = await self.dispatcher.repo.endpoints.get(instance_id)
            return ep is not None and ep.updated_at == updated_at

        deadline = time.monotonic() + 10
        while not await applied():
            if time.monotonic() > deadline:
                raise AssertionError("settings replica not updated within 10 s")
            await asyncio.sleep(0.02)

    async def publish(self, type_: str, instance_id: str | None, data: dict[str, Any], **kw: Any) -> Event:
        event = Event(
            type=type_, instance_id=instance_id, user_id=kw.pop("user_id", self.user_id), data=data, **kw
        )
        await self.bus.publish_event(event)
        return event

    async def call(
        self,
        name: str,
        instance_id: str,
        payload: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        role: str = "user",
        command: bool = False,
    ) -> Reply:
        cls = Command if command else Query
        request = cls(
            name=name,
            instance_id=instance_id,
            caller=Caller(user_id=user_id or self.user_id, role=role),
            payload=payload or {},
        )
        return await self.rpc.call(EXCHANGE_COMMANDS, WEBHOOKS_QUERY_QUEUE, request)


async def start_stack(settings: WebhooksSettings, **kw: Any) -> tuple[Any, Stack]:
    await asyncio.to_thread(upgrade, "wa_webhooks", settings.database_url)
    from wa_webhooks.main import build_app

    app = build_app(settings, **kw)
    runtime = app.state.runtime
    await runtime.start()
    bus = Bus(settings.amqp_url, service="webhooks-test")
    await bus.connect(declare=False, timeout_s=60)  # the service declared the topology
    rpc = RpcClient(bus)
    await rpc.start()
    return runtime, Stack(app.state.dispatcher, bus, rpc)


async def stop_stack(runtime: Any, stack: Stack) -> None:
    await stack.bus.close()
    await runtime.stop()
