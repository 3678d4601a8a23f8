"""Usage counters, idempotency ids, instance/user replicas, limits and the limit-event outbox."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

ID = sa.String(64)


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "stats_usage_daily",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _counter("messages_sent"),
        _counter("messages_received"),
        _counter("media_sent"),
        _counter("media_received"),
        _counter("total_media_size"),
        _counter("api_calls"),
        _counter("webhook_sent"),
        sa.PrimaryKeyConstraint("user_id", "instance_id", "day"),
    )
    op.create_index("ix_stats_usage_daily_instance_day", "stats_usage_daily", ["instance_id", "day"])
    op.create_index("ix_stats_usage_daily_day", "stats_usage_daily", ["day"])
    op.create_table(
        "stats_user_daily",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _counter("messages_sent"),
        _counter("api_calls"),
        sa.PrimaryKeyConstraint("user_id", "day"),
    )
    op.create_table(
        "stats_processed_events",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("processed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_stats_processed_events_processed_at", "stats_processed_events", ["processed_at"])
    op.create_table(
        "stats_instances",
        sa.Column("instance_id", ID, primary_key=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("snapshot_at", sa.String(40), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status_at", sa.DateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_stats_instances_user_id", "stats_instances", ["user_id"])
    op.create_table(
        "stats_users",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("changed_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "stats_limits",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("max_messages_sent", sa.BigInteger(), nullable=True),
        sa.Column("max_api_calls", sa.BigInteger(), nullable=True),
        sa.Column("max_instances", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "stats_limit_events",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("limit_name", sa.String(32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("event_id", ID, nullable=False, unique=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", "limit_name", "period_start"),
    )
    op.create_index("ix_stats_limit_events_published_at", "stats_limit_events", ["published_at"])


def downgrade() -> None:
    op.drop_table("stats_limit_events")
    op.drop_table("stats_limits")
    op.drop_table("stats_users")
    op.drop_table("stats_instances")
    op.drop_index("ix_stats_processed_events_processed_at", "stats_processed_events")
    op.drop_table("stats_processed_events")
    op.drop_table("stats_user_daily")
    op.drop_index("ix_stats_usage_daily_day", "stats_usage_daily")
    op.drop_index("ix_stats_usage_daily_instance_day", "stats_usage_daily")
    op.drop_table("stats_usage_daily")
