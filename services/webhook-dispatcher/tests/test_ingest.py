"""``wa_webhooks.ingest`` without I/O: which endpoint gets an event, and the delivery it gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from wa_common.schemas import Event
from wa_webhooks.ingest import delivery_for
from wa_webhooks.models import Endpoint

OCCURRED = datetime(2023, 1, 1, 12, 0, 0, 123999, tzinfo=UTC)


def endpoint(**overrides: Any) -> Endpoint:
    """Settings wanting ``message_sent`` and the always-sent events, not ``message_received``."""
    notify = dict(notify_received=False, notify_sent=True, notify_delivery=False, notify_read=False)
    values = dict(instance_id="I1", user_id="u1", url="https://hooks.example/h", enabled=True, **notify)
    return Endpoint(
        **values | dict(max_retries=2, retry_interval_ms=1000, headers={}, deleted=False) | overrides
    )


def test_a_user_wide_limit_exceeded_names_the_endpoints_instance() -> None:
    data = {"instanceId": None, "exceededLimits": ["maxApiCalls"], "usage": {"apiCalls": 5000}}
    event = Event(type="limit_exceeded", user_id="u1", data=data, occurred_at=OCCURRED)
    item = delivery_for(endpoint(), event)
    assert item is not None
    assert (item.event_id, item.instance_id, item.user_id, item.event) == (
        event.id,
        "I1",
        "u1",
        "limit_exceeded",
    )
    assert (item.url, item.max_retries, item.occurred_at) == ("https://hooks.example/h", 2, OCCURRED)
    assert item.body == (
        '{"event":"limit_exceeded","data":{"instanceId":"I1","exceededLimits":["maxApiCalls"],'
        '"usage":{"apiCalls":5000}},"timestamp":"2023-01-01T12:00:00.123Z"}'
    )
    assert json.loads(item.body)["timestamp"] == "2023-01-01T12:00:00.123Z"


def test_settings_that_do_not_want_the_event_get_nothing() -> None:
    received = {
        "instanceId": "I1",
        "messageId": "m",
        "from": "x",
        "body": "b",
        "type": "conversation",
        "timestamp": 1,
        "hasMedia": False,
    }
    event = Event(type="message_received", instance_id="I1", data=received)
    assert delivery_for(endpoint(), event) is None  # notifyReceived is off
    assert delivery_for(endpoint(notify_received=True), event) is not None
    connected = Event(type="connected", instance_id="I1", data={"instanceId": "I1"})
    assert delivery_for(endpoint(enabled=False), connected) is None
    assert delivery_for(endpoint(url=None), connected) is None
