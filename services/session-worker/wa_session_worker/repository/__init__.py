"""The session worker's document store (see :mod:`.base`)."""

from wa_session_worker.repository.base import (
    ActivityRec,
    ContactRec,
    EventRec,
    IdempotencyRec,
    InstanceRec,
    MessageRec,
    OutboxRec,
    Repository,
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
