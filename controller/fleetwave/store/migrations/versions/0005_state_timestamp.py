"""The device's own timestamp of its last stored state report.

With several replicas each stores every state report it receives, stamped with its own
receive time; a replica restarted onto a backlog in its persistent session would stamp an
old report as new and overwrite the current one. Two reports of one device are ordered by
the device's clock when both carry it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("state_timestamp", sa.BigInteger))


def downgrade() -> None:
    op.drop_column("devices", "state_timestamp")
