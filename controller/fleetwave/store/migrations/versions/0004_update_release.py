"""The `release` of each update attempt, which every signed command carries (DESIGN.md 9.1).

Records written before it get their creation time in milliseconds, the value the
controller would have given them, so an open attempt can still be re-published.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("updates", sa.Column("release", sa.BigInteger, nullable=False,
                                       server_default="0"))
    op.execute("UPDATE updates SET release = CAST(created_at * 1000 AS BIGINT)")


def downgrade() -> None:
    op.drop_column("updates", "release")
