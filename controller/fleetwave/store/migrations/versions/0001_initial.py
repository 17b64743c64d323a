"""Devices, update records, rollout state and the event log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN = "state IN ('acknowledged', 'in_progress', 'pending', 'scheduled')"


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("uuid", sa.Text, primary_key=True),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("reported_labels", sa.JSON, nullable=False),
        sa.Column("inventory_labels", sa.JSON, nullable=False),
        sa.Column("deployment_type", sa.Text),
        sa.Column("ip", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("containers", sa.JSON, nullable=False),
        sa.Column("online", sa.Boolean),
        sa.Column("online_at", sa.Double),
        sa.Column("last_seen", sa.Double),
        sa.Column("state_received_at", sa.Double),
    )
    op.create_table(
        "updates",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("rollout", sa.Text, nullable=False),
        sa.Column("component", sa.Text, nullable=False),
        sa.Column("to_version", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("from_version", sa.Text),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("triggered_by", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("exit_code", sa.BigInteger),
        sa.Column("progress", sa.Integer),
        sa.Column("health", sa.Text, nullable=False),
        sa.Column("sent_at", sa.Double),
        sa.Column("acknowledged_at", sa.Double),
        sa.Column("scheduled_at", sa.Double),
        sa.Column("started_at", sa.Double),
        sa.Column("completed_at", sa.Double),
        sa.Column("health_at", sa.Double),
        sa.Column("rolled_back_at", sa.Double),
        sa.Column("scheduled_time", sa.Text),
        sa.Column("force", sa.Boolean, nullable=False),
    )
    op.create_index("ix_updates_one_open_per_device_component", "updates",
                    ["device", "component"], unique=True,
                    sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
    op.create_index("ix_updates_device_created", "updates", ["device", "created_at"])
    op.create_index("ix_updates_rollout_state", "updates", ["rollout", "state"])
    op.create_index("ix_updates_state_created", "updates", ["state", "created_at"])
    op.create_table(
        "rollouts",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("spec_hash", sa.Text, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("rollout", sa.Text, nullable=False),
        sa.Column("device", sa.Text),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
    )
    op.create_index("ix_events_rollout_id", "events", ["rollout", "id"])
    op.create_index("ix_events_device", "events", ["device"])
    op.create_index("ix_events_time", "events", ["time"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("rollouts")
    op.drop_table("updates")
    op.drop_table("devices")
