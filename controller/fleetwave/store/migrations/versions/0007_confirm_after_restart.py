"""`health.confirmAfterRestart` on each update record, the boot id it was acknowledged
under, and the open-update index widened to the new open state `awaiting_restart`.

The index must follow `OPEN_STATES`: without it a device could get a second open update
while its first one waits for the restart.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_updates_one_open_per_device_component"
OPEN_BEFORE = "state IN ('acknowledged', 'in_progress', 'pending', 'scheduled')"
OPEN_AFTER = ("state IN ('acknowledged', 'awaiting_restart', 'in_progress', 'pending', "
              "'scheduled')")


def _index(where: str) -> None:
    op.drop_index(INDEX, table_name="updates")
    op.create_index(INDEX, "updates", ["device", "component"], unique=True,
                    sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def upgrade() -> None:
    op.add_column("updates", sa.Column("confirm_after_restart", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    op.add_column("updates", sa.Column("boot_id", sa.Text))
    _index(OPEN_AFTER)


def downgrade() -> None:
    op.execute("UPDATE updates SET state = 'in_progress' WHERE state = 'awaiting_restart'")
    _index(OPEN_BEFORE)
    with op.batch_alter_table("updates") as batch:
        batch.drop_column("boot_id")
        batch.drop_column("confirm_after_restart")
