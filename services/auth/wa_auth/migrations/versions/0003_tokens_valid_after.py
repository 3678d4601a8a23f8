"""Token revocation: tokens issued before ``users.tokens_valid_after`` are refused."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("users", sa.Column("tokens_valid_after", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "tokens_valid_after")
