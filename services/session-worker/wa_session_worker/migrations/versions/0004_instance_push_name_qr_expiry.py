"""The linked account's push name and the QR code's expiry on each instance
(``connectionStatus.pushName``, ``GET .../qr`` ``expiresAt``)."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("push_name", sa.String(256), nullable=True))
        batch.add_column(sa.Column("qr_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("qr_expires_at")
        batch.drop_column("push_name")
