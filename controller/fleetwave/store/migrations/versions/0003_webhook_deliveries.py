"""Webhook deliveries already handled, for replay refusal across restarts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_webhook_deliveries_expires", "webhook_deliveries", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_expires", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
