from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from wa_common.bus import shard_for
from wa_common.ids import id_timestamp_ms, new_id
from wa_common.schemas import Command, Event, Reply
from wa_common.schemas.events import MessageReceivedData
from wa_common.settings import InsecureSettingsError, ServiceSettings, StoreSettings


def test_ids_are_unique_and_sortable_by_time() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)
    # Sorting the strings sorts by creation time.
    assert [id_timestamp_ms(i) for i in sorted(ids)] == sorted(id_timestamp_ms(i) for i in ids)
    first, later = ids[0], new_id()
    assert id_timestamp_ms(first) <= id_timestamp_ms(later)


def test_event_round_trip_keeps_utc_and_unicode() -> None:
    event = Event(
        type="message_received",
        instance_id="i1",
        data={"body": "Привет 👋"},
        occurred_at=datetime(2026, 1, 1, 12, 0),
    )
    parsed = Event.from_bytes(event.to_bytes())
    assert parsed == event
    assert parsed.occurred_at.tzinfo is UTC
    assert parsed.routing_key == "message_received.i1"
    assert Event(type="user.deleted").routing_key == "user.deleted.-"


def test_unknown_fields_are_ignored_and_missing_ones_rejected() -> None:
    assert Command.from_bytes(b'{"name": "x", "future": 1}').name == "x"
    with pytest.raises(ValidationError):
        Command.from_bytes(b'{"payload": {}}')


def test_expired_command() -> None:
    cmd = Command(name="x", deadline=datetime(2020, 1, 1, tzinfo=UTC))
    assert cmd.expired()


def test_reply_helpers() -> None:
    assert Reply.failure(404, "instance not found").model_dump()["status"] == 404
    assert Reply.success({"a": 1}, 201).ok


def test_webhook_payload_uses_reference_names() -> None:
    data = MessageReceivedData(
        instance_id="i",
        message_id="m",
        from_="1@s.whatsapp.net",
        body="hi",
        type="conversation",
        timestamp=1,
        has_media=False,
        push_name="John",
    ).dump()
    assert list(data) == [
        "instanceId",
        "messageId",
        "from",
        "body",
        "type",
        "timestamp",
        "hasMedia",
        "pushName",
    ]


def test_shard_is_stable_and_spread() -> None:
    assert shard_for("abc", 64) == shard_for("abc", 64)
    # Pinned values: gateways and workers of different versions must agree on every shard.
    assert shard_for("abc", 64) == 42
    assert shard_for("01JD3Z8M4W8Q2J7ZQ7S9W6X2KA", 64) == 53
    counts = [0] * 8
    for _ in range(4000):
        counts[shard_for(new_id(), 8)] += 1
    assert min(counts) > 350


def test_production_profile_refuses_insecure_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROFILE", "production")
    monkeypatch.delenv("AMQP_URL", raising=False)
    with pytest.raises(ValidationError, match="refuses insecure defaults: AMQP_URL"):
        ServiceSettings()
    monkeypatch.setenv("AMQP_URL", "amqp://svc:s3cret@rabbit:5672/")
    assert ServiceSettings().amqp_url.endswith("rabbit:5672/")


def test_production_profile_refuses_template_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value copied from deploy/k8s/base/secret.yaml without replacing CHANGE-ME is refused,
    naming the variable but never echoing the value (it may hold a real password elsewhere)."""

    class AuthSettings(StoreSettings):
        model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", populate_by_name=True)

    monkeypatch.setenv("WA_PROFILE", "production")
    monkeypatch.setenv("AMQP_URL", "amqp://wa:change-me@rabbitmq:5672/wa")
    with pytest.raises(ValidationError, match=r"AMQP_URL \(template placeholder CHANGE-ME\)") as err:
        ServiceSettings()
    assert "rabbitmq:5672" not in str(err.value)
    monkeypatch.setenv("AMQP_URL", "amqp://wa:s3cret@rabbitmq:5672/wa")
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql://wa:CHANGE-ME@postgresql:5432/wa_auth")
    with pytest.raises(ValidationError, match=r"AUTH_DATABASE_URL \(template placeholder"):
        AuthSettings()
    monkeypatch.setenv("WA_PROFILE", "dev")
    assert AuthSettings().database_url.endswith("/wa_auth"), "dev and embedded profiles allow it"


def test_embedded_profile_allows_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_PROFILE", "embedded")
    monkeypatch.delenv("AMQP_URL", raising=False)
    assert ServiceSettings().relaxed


def test_insecure_error_type() -> None:
    assert issubclass(InsecureSettingsError, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@rabbitmq.internal:5672/wa",  # not only the exact default URL
        "amqp://GUEST:guest@10.0.0.5/",
        "amqp://guest:anything@rabbit/",  # RabbitMQ's guest account, whatever its password
        "amqp://guest@rabbit/",
        "amqps://postgres:postgres@host/",
    ],
)
def test_production_profile_refuses_shipped_credentials_anywhere(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("WA_PROFILE", "production")
    monkeypatch.setenv("AMQP_URL", url)
    with pytest.raises(ValidationError, match=r"AMQP_URL \(shipped credentials\)") as err:
        ServiceSettings()
    message = str(err.value)
    assert url not in message and "@" not in message.split("refuses insecure defaults")[1], "no value shown"


def test_production_profile_refuses_shipped_database_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    class StatsSettings(StoreSettings):
        model_config = SettingsConfigDict(env_prefix="STATS_", extra="ignore", populate_by_name=True)

    monkeypatch.setenv("WA_PROFILE", "production")
    monkeypatch.setenv("AMQP_URL", "amqp://wa:s3cret@rabbitmq:5672/wa")
    monkeypatch.setenv("STATS_DATABASE_URL", "postgresql://postgres:postgres@db:5432/wa_stats")
    with pytest.raises(ValidationError, match=r"STATS_DATABASE_URL \(shipped credentials\)"):
        StatsSettings()
    monkeypatch.setenv("STATS_DATABASE_URL", "postgresql://wa:9f3b2c@db:5432/wa_stats")
    assert StatsSettings().database_url.endswith("/wa_stats")
