"""Wire schemas shared by all services: the event envelope, commands, queries, replies.

Version 1 (``SCHEMA_VERSION``). A consumer accepts any message whose ``v`` it knows and ignores
unknown fields, so a field can be added without a version bump; removing or changing the meaning
of one needs a new version.
"""

from wa_common.schemas.envelope import (
    SCHEMA_VERSION,
    Caller,
    Command,
    Event,
    Query,
    Reply,
    Request,
    Role,
    utcnow,
)
from wa_common.schemas.events import EventType

__all__ = [
    "SCHEMA_VERSION",
    "Caller",
    "Command",
    "Event",
    "EventType",
    "Query",
    "Reply",
    "Request",
    "Role",
    "utcnow",
]
