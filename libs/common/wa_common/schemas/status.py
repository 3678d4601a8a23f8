"""The status and name vocabularies every service shares (one definition each).

``StrEnum`` members are their wire strings (``InstanceStatus.CONNECTED == "connected"``), so a
store column or a JSON body holds the plain string.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    """An instance's connection state (reference, ``connectionStatus.status``)."""

    CONNECTING = "connecting"
    QR = "qr"  # waiting for the QR code to be scanned (or a pairing code to be entered)
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"


class MessageStatus(StrEnum):
    """A stored message's status; receipts only move it forward (:data:`MESSAGE_STATUS_RANK`)."""

    PENDING = "pending"
    RECEIVED = "received"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"


# How far a message has come: a receipt of a lower or equal rank does not change the status.
MESSAGE_STATUS_RANK: dict[MessageStatus, int] = {
    MessageStatus.PENDING: 0,
    MessageStatus.RECEIVED: 1,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
    MessageStatus.PLAYED: 4,
}


class DeliveryStatus(StrEnum):
    """A webhook delivery's state (the dispatcher's outbox)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LimitName(StrEnum):
    """A usage limit (reference, "Usage Limits"): two daily counters and one standing count."""

    MAX_MESSAGES_SENT = "maxMessagesSent"
    MAX_API_CALLS = "maxApiCalls"
    MAX_INSTANCES = "maxInstances"
