"""RabbitMQ bus client (aio-pika): topology, publishing with confirms, consuming, request/reply."""

from wa_common.bus.client import Bus, Consumer, Delivery, PublishError, Reject
from wa_common.bus.dead_letters import DEAD_LETTERS_DROPPED
from wa_common.bus.rpc import RequestTimeout, RpcClient, send_reply
from wa_common.bus.topology import (
    DROPPED_QUEUE,
    EXCHANGE_COMMANDS,
    EXCHANGE_DLX,
    EXCHANGE_DLX_DROPPED,
    EXCHANGE_EVENTS,
    EXCHANGE_SIM,
    QUERY_QUEUE,
    QUERY_ROUTING_KEY,
    SERVICE_QUEUES,
    STATS_QUERY_QUEUE,
    WEBHOOKS_QUERY_QUEUE,
    DeadLetterLimits,
    QueueSpec,
    dead_letter_queue,
    declare_topology,
    shard_for,
    shard_queue,
)

__all__ = [
    "DEAD_LETTERS_DROPPED",
    "DROPPED_QUEUE",
    "EXCHANGE_COMMANDS",
    "EXCHANGE_DLX",
    "EXCHANGE_DLX_DROPPED",
    "EXCHANGE_EVENTS",
    "EXCHANGE_SIM",
    "QUERY_QUEUE",
    "QUERY_ROUTING_KEY",
    "SERVICE_QUEUES",
    "STATS_QUERY_QUEUE",
    "WEBHOOKS_QUERY_QUEUE",
    "Bus",
    "Consumer",
    "DeadLetterLimits",
    "Delivery",
    "PublishError",
    "QueueSpec",
    "Reject",
    "RequestTimeout",
    "RpcClient",
    "dead_letter_queue",
    "declare_topology",
    "send_reply",
    "shard_for",
    "shard_queue",
]
