"""The tables, as SQLAlchemy Core metadata shared by queries and the migration check.

Migrations under `migrations/versions/` are frozen copies of what this file said
when they were written; a test compares the migrated database with this
metadata so the two cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa

from fleetwave.updates.model import OPEN_STATES

metadata = sa.MetaData()

OPEN_STATES_SQL = "state IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(OPEN_STATES)))
"""The partial-index predicate: at most one open update per device and component."""

EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""SQLite only auto-increments an `INTEGER PRIMARY KEY`; PostgreSQL gets a bigint identity."""

devices = sa.Table(
    "devices", metadata,
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
    sa.Column("state_timestamp", sa.BigInteger),
    # The device's clock (ms) on that report: orders two reports of one device across
    # replicas, whose receive times do not (a backlog drained late looks new).
)

updates = sa.Table(
    "updates", metadata,
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
    sa.Column("release", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("confirm_after_restart", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("boot_id", sa.Text),
    sa.Index("ix_updates_one_open_per_device_component", "device", "component", unique=True,
             sqlite_where=sa.text(OPEN_STATES_SQL), postgresql_where=sa.text(OPEN_STATES_SQL)),
    sa.Index("ix_updates_device_created", "device", "created_at"),
    sa.Index("ix_updates_rollout_state", "rollout", "state"),
    sa.Index("ix_updates_state_created", "state", "created_at"),
)

rollouts = sa.Table(
    "rollouts", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("spec_hash", sa.Text, nullable=False),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("status", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Double, nullable=False),
    sa.Column("rollout", sa.Text, nullable=False),
    sa.Column("device", sa.Text),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Index("ix_events_rollout_id", "rollout", "id"),
    sa.Index("ix_events_device", "device"),
    sa.Index("ix_events_time", "time"),
)

leadership = sa.Table(
    "leadership", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("address", sa.Text),
)
"""One row per elected role: who leads, under which epoch, until when (database clock)."""

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("ix_webhook_deliveries_expires", "expires_at"),
)
"""Webhook deliveries already acted on, so a replay (or a sender's retry) is refused even
after a restart; rows past `expires_at` are deleted, which keeps the table bounded."""
