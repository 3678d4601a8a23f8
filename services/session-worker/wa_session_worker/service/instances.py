"""An instance's life: create, update, delete, reconnect, log out, pair by phone number.

Commands of the instance's shard, run one at a time per instance (the commands router's lock).
Each answers the reference's body as its model (built by :mod:`~wa_session_worker.service.views`);
what it changes is reported as events (:class:`~wa_session_worker.service.recorder.Recorder`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from wa_common.bus import shard_for
from wa_common.bus.router import RequestError
from wa_common.logs import get_logger
from wa_common.schemas import Command, Reply
from wa_common.schemas.events import (
    DisconnectedData,
    EventType,
    InstanceDeletedData,
    InstanceSnapshot,
    WebhookSettings,
    WebhookUpdatedData,
)
from wa_common.schemas.instances import InstanceUpdated, PairingCode, SuccessMessage
from wa_common.schemas.session import CreateInstance, PairPhone, UpdateInstance
from wa_common.schemas.status import InstanceStatus
from wa_session_worker.engines.base import SessionNotConnected
from wa_session_worker.repository.records import InstanceRec
from wa_session_worker.service import views
from wa_session_worker.service.access import instance_for, require_caller
from wa_session_worker.service.sessions import SessionCommands

log = get_logger(__name__)

# What an update may change, and which of those may be set to null.
_UPDATABLE = ("name", "description", "webhook_url", "webhook_enabled")
_NULLABLE = ("description", "webhook_url")
_WEBHOOK_FIELDS = ("webhook_url", "webhook_enabled", "webhook_settings")


def snapshot(rec: InstanceRec) -> dict[str, Any]:
    """The ``instance.*`` event data: what other services keep of an instance."""
    return InstanceSnapshot(
        instance_id=rec.id,
        user_id=rec.user_id,
        name=rec.name,
        webhook_url=rec.webhook_url,
        webhook_enabled=rec.webhook_enabled,
        webhook_settings=WebhookSettings.model_validate(rec.webhook_settings),
        updated_at=views.iso(rec.updated_at) or "",
    ).dump()


class Instances(SessionCommands):
    """The lifecycle commands of an instance (module docstring)."""

    async def _announce(self, rec: InstanceRec, type_: str) -> None:
        await self.recorder.publish(rec.id, rec.user_id, type_, snapshot(rec), keep_recent=False)

    async def create(self, cmd: Command, body: CreateInstance) -> Reply:
        caller = require_caller(cmd.caller)
        assert cmd.instance_id is not None  # the commands router refuses a command without one
        now = self.clock()
        settings = WebhookSettings(
            notify_received=body.notify_received,
            notify_sent=body.notify_sent,
            notify_delivery=body.notify_delivery,
            notify_read=body.notify_read,
            max_retries=body.max_retries,
            retry_interval=body.retry_interval,
            secret=body.webhook_secret,
            headers=body.headers,
        )
        rec = InstanceRec(
            id=cmd.instance_id,
            user_id=caller.user_id,
            name=body.name,
            description=body.description,
            shard=shard_for(cmd.instance_id, self.settings.shard_count),
            status=InstanceStatus.CONNECTING.value,
            created_at=now,
            updated_at=now,
            webhook_url=body.webhook_url,
            webhook_enabled=body.webhook_enabled,
            webhook_settings=settings.dump(),
            last_activity_at=now,
        )
        created = await self.repo.create_instance(rec)
        if not created:
            existing = await self.repo.get_instance(rec.id)
            if existing is None or existing.user_id != rec.user_id:
                raise RequestError(409, "an instance with this id already exists")
            rec = existing  # a redelivered or retried create: answer as the first time
        self.recorder.remember(rec.id, rec.user_id)
        if created:
            await self.recorder.activity(rec.id, "created", {"name": rec.name})
        # A repeat announces it again: the first run may have stopped between storing the
        # instance and staging its event (replicas keep the newest snapshot, so a repeat changes
        # nothing).
        await self._announce(rec, EventType.INSTANCE_CREATED)
        if rec.status != InstanceStatus.LOGGED_OUT and rec.id not in self.running:
            await self.sessions.start(rec, reason="create")
        return Reply.success(views.instance_body(rec), status=201)

    async def update(self, cmd: Command, body: UpdateInstance) -> InstanceUpdated:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        fields: dict[str, Any] = {}
        for name in _UPDATABLE:
            value = getattr(body, name)
            if name in body.model_fields_set and (value is not None or name in _NULLABLE):
                fields[name] = value
        if body.webhook_settings is not None:
            merged = {
                **rec.webhook_settings,
                **body.webhook_settings.model_dump(by_alias=True, exclude_unset=True),
            }
            fields["webhook_settings"] = WebhookSettings.model_validate(merged).dump()
        webhook_changed = any(fields.get(k, getattr(rec, k)) != getattr(rec, k) for k in _WEBHOOK_FIELDS)
        fields["updated_at"] = self.clock()
        updated = await self.repo.update_instance(rec.id, **fields)
        if updated is None:
            raise RequestError(404, "Instance not found")
        changed = sorted(k for k in fields if k != "updated_at")
        await self.recorder.activity(rec.id, "updated", {"fields": changed})
        await self._announce(updated, EventType.INSTANCE_UPDATED)
        if webhook_changed:
            data = WebhookUpdatedData(
                instance_id=rec.id, timestamp=views.iso(updated.updated_at) or ""
            ).dump()
            await self.recorder.publish(rec.id, rec.user_id, EventType.WEBHOOK_UPDATED, data)
        return views.instance_update_body(updated)

    async def delete(self, cmd: Command) -> SuccessMessage:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        if self.running.remove(rec.id) or rec.device_jid:
            try:
                await self.engine.logout(rec.id)
            except Exception as exc:
                log.warning("logout during delete failed", instance_id=rec.id, error=str(exc))
                try:
                    await self.engine.stop_session(rec.id)
                except Exception:
                    log.exception("stop during delete failed", instance_id=rec.id)
        await self.repo.delete_instance(rec.id)
        self.running.forget(rec.id)
        self.recorder.forget(rec.id)
        data = InstanceDeletedData(instance_id=rec.id, user_id=rec.user_id).dump()
        await self.recorder.publish(rec.id, rec.user_id, EventType.INSTANCE_DELETED, data, keep_recent=False)
        return views.deleted(rec.id)

    async def reconnect(self, cmd: Command) -> SuccessMessage:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        await self.sessions.stop(rec.id)
        rec = (
            await self.repo.update_instance(
                rec.id,
                status=InstanceStatus.CONNECTING.value,
                qr_code=None,
                qr_expires_at=None,
                updated_at=self.clock(),
            )
            or rec
        )
        await self.recorder.activity(rec.id, "reconnect", {"withDevice": bool(rec.device_jid)})
        await self.sessions.start(rec, reason="reconnect")
        return views.reconnected(rec.id)

    async def logout(self, cmd: Command) -> SuccessMessage:
        """Unlink the device and stop the session: ``disconnected`` with ``reason: "logout"``
        (the reference's example). An instance already logged out (no session here, no device)
        answers the same 200 and emits nothing: its ``disconnected`` was already sent.

        The event is staged before the instance is marked logged out: a run interrupted between
        the two is repeated in full by the redelivered command (at worst a second event, never
        a lost one)."""
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        answer = views.logged_out(rec.id)
        was_running = self.running.remove(rec.id)
        if not was_running and not rec.device_jid and rec.status == InstanceStatus.LOGGED_OUT:
            return answer
        if was_running or rec.device_jid:
            with contextlib.suppress(SessionNotConnected):
                await self.engine.logout(rec.id)
        data = DisconnectedData(instance_id=rec.id, reason="logout", will_reconnect=False).dump()
        await self.recorder.publish(rec.id, rec.user_id, EventType.DISCONNECTED, data)
        fields = self.recorder.status_change(InstanceStatus.LOGGED_OUT)
        await self.repo.update_instance(rec.id, **fields, device_jid=None, device_data=None, push_name=None)
        await self.recorder.activity(rec.id, "logged_out", {"reason": "logout"})
        return answer

    async def pair_phone(self, cmd: Command, body: PairPhone) -> PairingCode:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        phone = views.to_jid(body.phone, groups=False, lids=False).split("@", 1)[0]
        if rec.status == InstanceStatus.CONNECTED:
            raise RequestError(409, "instance is already connected")
        if rec.id not in self.running:
            await self.sessions.start(rec, reason="reconnect")
        code = await self.engine.pair_phone(rec.id, phone)
        await self.recorder.activity(rec.id, "pairing_code", {"phone": phone})
        return views.pairing_code(code)
