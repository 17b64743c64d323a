"""The store: devices, update records, rollout status and the audit trail (SQLite, PostgreSQL).

    store = open_store("sqlite:///fleetwave.db")
    await store.migrate()
    outcomes = await store.updates.apply_statuses(batch)
"""

from fleetwave.store.codec import device_json, event_json, record_json
from fleetwave.store.errors import StoreError
from fleetwave.store.rows import (
    DeviceRow,
    Event,
    EventPage,
    PassResult,
    PassWrite,
    RolloutRow,
    RolloutSave,
    StatusOutcome,
    UpdateStats,
    is_newer,
    report_is_newer,
    supersedes,
)
from fleetwave.store.store import Store, open_store

__all__ = [
    "DeviceRow",
    "Event",
    "EventPage",
    "PassResult",
    "PassWrite",
    "RolloutRow",
    "RolloutSave",
    "StatusOutcome",
    "Store",
    "StoreError",
    "UpdateStats",
    "device_json",
    "event_json",
    "is_newer",
    "open_store",
    "record_json",
    "report_is_newer",
    "supersedes",
]
