"""Baseline of the session-worker store."""

revision = "0001"
down_revision = None


def upgrade() -> None:
    """No tables yet: revision 0002 creates them."""


def downgrade() -> None:
    """Nothing to drop."""
