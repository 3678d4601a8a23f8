"""The webhooks store, one object: the settings replica, the outbox and its retention, on one
engine and one session factory (modules ``endpoints``, ``deliveries``, ``retention``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from wa_common.clock import Clock, utcnow
from wa_common.db import session_factory
from wa_webhooks.deliveries import DeliveryStore
from wa_webhooks.endpoints import EndpointStore
from wa_webhooks.retention import RetentionStore


class Repository:
    """``endpoints`` (settings replica), ``deliveries`` (outbox rows and attempts) and
    ``retention``, sharing ``engine``, ``sessions`` and ``clock`` (aware UTC)."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.clock = clock
        self.endpoints = EndpointStore(engine, sessions=self.sessions, clock=clock)
        self.deliveries = DeliveryStore(engine, sessions=self.sessions, clock=clock)
        self.retention = RetentionStore(engine, sessions=self.sessions, clock=clock)
