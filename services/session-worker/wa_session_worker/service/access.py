"""Who may use an instance: the one check every request about an instance starts with."""

from __future__ import annotations

from wa_common.bus.router import RequestError
from wa_common.schemas import Caller
from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import InstanceRec


def require_caller(caller: Caller | None) -> Caller:
    """401 unless the request carries the caller's identity (the gateway sets it)."""
    if caller is None:
        raise RequestError(401, "request carries no caller identity")
    return caller


async def instance_for(repo: Repository, caller: Caller | None, instance_id: str | None) -> InstanceRec:
    """The instance ``instance_id`` when ``caller`` may use it (its owner, or an admin); 401
    without a caller, 400 without an id, 404 otherwise (another user's instance is not found)."""
    caller = require_caller(caller)
    if not instance_id:
        raise RequestError(400, "instance id is required")
    rec = await repo.get_instance(instance_id)
    if rec is None or (not caller.is_admin and rec.user_id != caller.user_id):
        raise RequestError(404, "Instance not found")
    return rec
