"""The session worker's document store (see :mod:`.base`)."""

from wa_session_worker.repository.base import Repository
from wa_session_worker.repository.records import (
    ActivityRec,
    ContactRec,
    EventRec,
    IdempotencyRec,
    InstanceRec,
    MessageRec,
    OutboxRec,
)

__all__ = [
    "ActivityRec",
    "ContactRec",
    "EventRec",
    "IdempotencyRec",
    "InstanceRec",
    "MessageRec",
    "OutboxRec",
    "Repository",
]
