"""Converting between table rows, frozen values and the JSON users export.

Kept apart from the queries so the shape of a record on disk and on the wire
is decided in one place (DESIGN.md section 8 names the camelCase fields).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleetwave.protocol.messages import Container
from fleetwave.store.rows import DeviceRow, Event
from fleetwave.updates.model import Health, UpdateRecord, UpdateState

RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(UpdateRecord))
MUTABLE_FIELDS = (
    "state", "updated_at", "from_version", "reason", "error", "exit_code", "progress", "health",
    "sent_at", "acknowledged_at", "scheduled_at", "started_at", "completed_at", "health_at",
    "rolled_back_at", "boot_id",
)
"""What the state machine may change; the rest of a record is fixed at creation."""

TEXT_LIMIT = 4000
"""Longest device-supplied text kept (errors can carry whole logs)."""

INT64 = 2**63 - 1


_SHARED_TEXT = ("device", "rollout", "component", "to_version", "from_version", "triggered_by",
                "action")
"""Fields that repeat across a fleet's records: interned, the engine holds one per device."""


def record_from_row(row: Mapping[Any, Any]) -> UpdateRecord:
    values = {name: row[name] for name in RECORD_FIELDS}
    for name in _SHARED_TEXT:
        if values[name] is not None:
            values[name] = sys.intern(values[name])
    values["state"] = UpdateState(values["state"])
    values["health"] = Health(values["health"])
    values["force"] = bool(values["force"])
    values["confirm_after_restart"] = bool(values["confirm_after_restart"])
    return UpdateRecord(**values)


def record_params(record: UpdateRecord, fields: tuple[str, ...] = RECORD_FIELDS) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in fields}
    if "state" in values:
        values["state"] = record.state.value
    if "health" in values:
        values["health"] = record.health.value
    return values


def _clean_text(value: str | None) -> str | None:
    if value is None:
        return None
    # PostgreSQL text cannot hold NUL; a device's error output sometimes does.
    return value.replace("\x00", "")[:TEXT_LIMIT]


def sanitized(record: UpdateRecord) -> UpdateRecord:
    """`record` with device-supplied values made storable on every backend."""
    error = _clean_text(record.error)
    reason = _clean_text(record.reason)
    from_version = _clean_text(record.from_version)
    exit_code = record.exit_code
    if exit_code is not None and not -INT64 <= exit_code <= INT64:
        exit_code = None
    if (error, reason, from_version, exit_code) == (record.error, record.reason,
                                                    record.from_version, record.exit_code):
        return record
    return dataclasses.replace(record, error=error, reason=reason, from_version=from_version,
                               exit_code=exit_code)


def device_from_row(row: Mapping[Any, Any]) -> DeviceRow:
    reported = dict(row["reported_labels"] or {})
    inventory = dict(row["inventory_labels"] or {})
    containers = tuple(
        Container(name=str(c.get("name", "")), image=c.get("image"),
                  running=bool(c.get("running", True)))
        for c in row["containers"] or () if isinstance(c, dict))
    online = row["online"]
    return DeviceRow(
        uuid=row["uuid"], versions=dict(row["versions"] or {}), reported_labels=reported,
        inventory_labels=inventory, labels={**reported, **inventory},
        deployment_type=row["deployment_type"], ip=row["ip"], name=row["name"],
        containers=containers, online=None if online is None else bool(online),
        last_seen=row["last_seen"], state_received_at=row["state_received_at"],
        state_timestamp=row["state_timestamp"], online_at=row["online_at"])


def containers_json(containers: tuple[Container, ...]) -> list[dict[str, Any]]:
    return [{"name": c.name, "image": c.image, "running": c.running} for c in containers]


def camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC, the form the API and exports show times in."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def record_json(record: UpdateRecord) -> dict[str, Any]:
    """An update record as the API and exports show it (camelCase, DESIGN.md section 8)."""
    return {camel(name): iso(value) if name.endswith("_at") else value
            for name, value in record_params(record).items()}


def device_json(device: DeviceRow) -> dict[str, Any]:
    return {
        "uuid": device.uuid, "versions": dict(device.versions), "labels": dict(device.labels),
        "reportedLabels": dict(device.reported_labels),
        "inventoryLabels": dict(device.inventory_labels),
        "deploymentType": device.deployment_type, "ip": device.ip, "name": device.name,
        "containers": containers_json(device.containers), "online": device.online,
        "lastSeen": iso(device.last_seen), "stateReceivedAt": iso(device.state_received_at),
    }


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "time": iso(event.time), "rollout": event.rollout,
            "device": event.device, "type": event.type, "reason": event.reason,
            "message": event.message, "actor": event.actor}
