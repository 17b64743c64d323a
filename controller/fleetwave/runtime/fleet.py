"""The fleet in memory: devices, update records and each rollout's planner state and status.

Pure data and one merge rule, no I/O: the reconciler and the ingest write it (after the
store committed the same change), queries read it. The merge rule is the store's
(`store.rows.report_is_newer` for state reports, `is_newer` for liveness,
`store.rows.supersedes` for records), so memory and the store agree whatever order a
batch and a load interleave in.

Compact, because it holds every device: one slotted row per device, which is the
planner's view of it too; versions, labels and components are interned and equal
mappings are shared (100,000 devices on one version hold one `versions` dict between them).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from fleetwave.planner.model import RolloutState
from fleetwave.protocol.messages import Container, Online, ReportedState
from fleetwave.resources.inventory import device_labels
from fleetwave.store import DeviceRow, is_newer, report_is_newer, supersedes
from fleetwave.updates.model import UpdateRecord

_EMPTY: dict[str, str] = {}


class _Shared:
    """Equal small string mappings become one shared dict (never mutated by anyone)."""

    def __init__(self) -> None:
        self._known: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def __call__(self, mapping: Mapping[str, str]) -> Mapping[str, str]:
        if not mapping:
            return _EMPTY
        key = tuple(sorted(mapping.items()))
        held = self._known.get(key)
        if held is None:
            if len(self._known) > 100_000:
                self._known.clear()  # unique label sets: sharing buys nothing, stop growing
            held = {sys.intern(k): sys.intern(v) for k, v in key}
            self._known[key] = held
        return held


def reported_at(msg: ReportedState) -> float:
    """When the device reported this state: our receive time, or the device's own clock
    when that is earlier. A report published before an update ended but received after its
    success status (a reconnect's backlog, another replica's share) must not read as the
    device going back to the old version; a device clock running behind only delays that
    verdict (up to offlineAfterUpdate), never invents one."""
    if msg.timestamp is None:
        return msg.received_at
    return min(msg.received_at, msg.timestamp / 1000.0)


class FleetState:
    """What the engine knows of the fleet; every write goes through the merge rule."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRow] = {}
        """uuid -> the device, which is also the planner's view of it (`DeviceView`)."""
        self.inventory: dict[str, dict[str, str]] = {}
        self.records: dict[str, dict[str, list[UpdateRecord]]] = {}
        """rollout -> device -> attempts, oldest first."""
        self.by_id: dict[str, UpdateRecord] = {}
        self.open: dict[str, set[str]] = {}
        """device -> ids of its open update records."""
        self.states: dict[str, RolloutState] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.dirty_components: set[str] = set()
        """Components with records that changed since the reconciler last took this set
        (a record of a deleted rollout can free a device for another of its component)."""
        self.devices_changed = True
        self._sorted: list[str] | None = None
        """The uuids in order, for paging; rebuilt only after a device joins."""
        self._shared = _Shared()

    # -- devices ---------------------------------------------------------------------

    def put_device(self, row: DeviceRow) -> None:
        """Hold `row` (from the store) with the inventory's labels merged over the reported
        ones."""
        self._put(row.uuid, row.versions, row.reported_labels, row.deployment_type, row.ip,
                  row.name, row.containers, state_at=row.state_received_at,
                  state_ts=row.state_timestamp, online=row.online, online_at=row.online_at,
                  last_seen=row.last_seen, inventory=row.inventory_labels)

    def _put(self, uuid: str, versions: Mapping[str, str], reported: Mapping[str, str],
             deployment_type: str | None, ip: str | None, name: str | None,
             containers: tuple[Container, ...], *, state_at: float | None,
             state_ts: int | None, online: bool | None, online_at: float | None,
             last_seen: float | None, inventory: Mapping[str, str] = _EMPTY) -> None:
        shared = self._shared
        inventory = shared(self.inventory.get(uuid, inventory))
        reported = shared(reported)
        labels = shared(device_labels(reported, inventory)) if inventory else reported
        if uuid not in self.devices:
            self._sorted = None
        self.devices[uuid] = DeviceRow(
            uuid=uuid, versions=shared(versions), reported_labels=reported,
            inventory_labels=inventory, labels=labels, deployment_type=_intern(deployment_type),
            ip=ip, name=name, containers=containers, online=online, online_at=online_at,
            last_seen=last_seen, state_received_at=state_at, state_timestamp=state_ts)
        self.devices_changed = True

    def merge_device_message(self, msg: ReportedState | Online) -> bool:
        """Apply one report if it is newer than what is held; True if it was."""
        row = self.devices.get(msg.device)
        at = msg.received_at
        if isinstance(msg, ReportedState):
            if row is None:
                self._put(sys.intern(msg.device), msg.versions, msg.labels, msg.deployment_type,
                          msg.ip, msg.name, msg.containers, state_at=reported_at(msg),
                          state_ts=msg.timestamp, online=None, online_at=None, last_seen=at)
                return True
            if not report_is_newer(msg.timestamp, at, row.state_timestamp,
                                   row.state_received_at):
                return False
            self._put(row.uuid, msg.versions, msg.labels,
                      msg.deployment_type or row.deployment_type, msg.ip or row.ip,
                      msg.name or row.name, msg.containers, state_at=reported_at(msg),
                      state_ts=msg.timestamp if msg.timestamp is not None else row.state_timestamp,
                      online=row.online, online_at=row.online_at,
                      last_seen=max(row.last_seen or 0.0, at), inventory=row.inventory_labels)
            return True
        if row is None:
            self._put(sys.intern(msg.device), _EMPTY, _EMPTY, None, None, None, (),
                      state_at=None, state_ts=None, online=msg.online, online_at=at,
                      last_seen=at)
            return True
        if not is_newer(at, row.online_at):
            return False
        # Liveness alone changed: the row's mappings are already shared, so they are kept
        # as they are (a 100,000-device start-up sends one of these per device).
        self.devices[row.uuid] = dataclasses.replace(
            row, online=msg.online, online_at=at, last_seen=max(row.last_seen or 0.0, at))
        self.devices_changed = True
        return True

    def sorted_uuids(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.devices)
        return self._sorted

    def set_inventory(self, inventory: Mapping[str, Mapping[str, str]]) -> bool:
        """A new inventory from the source; True (and every device relabelled) if it
        changed."""
        if dict(inventory) == self.inventory:
            return False
        self.inventory = {k: dict(v) for k, v in inventory.items()}
        for row in list(self.devices.values()):
            self.put_device(row)
        return True

    # -- update records ----------------------------------------------------------------

    def remember(self, record: UpdateRecord) -> bool:
        """Merge one record; True when this made it terminal (count it once)."""
        old = self.by_id.get(record.id)
        if not supersedes(record, old):
            return False  # a stale copy (read before a newer write): memory never moves back
        self.by_id[record.id] = record
        self.dirty_components.add(record.component)
        if record.is_open:
            self.open.setdefault(record.device, set()).add(record.id)
        else:
            ids = self.open.get(record.device)
            if ids is not None:
                ids.discard(record.id)
                if not ids:
                    del self.open[record.device]
        attempts = self.records.setdefault(record.rollout, {}).setdefault(record.device, [])
        if old is not None:
            for i, r in enumerate(attempts):
                if r.id == record.id:
                    attempts[i] = record
                    break
            else:
                attempts.append(record)
        else:
            attempts.append(record)
            if len(attempts) > 1:
                attempts.sort(key=lambda r: (r.created_at, r.attempt))
        return record.is_terminal and (old is None or not old.is_terminal)

    def latest(self, rollout: str, device: str) -> UpdateRecord | None:
        attempts = self.records.get(rollout, {}).get(device)
        return attempts[-1] if attempts else None

    def open_records(self) -> Iterator[UpdateRecord]:
        for ids in self.open.values():
            for record_id in ids:
                yield self.by_id[record_id]

    def forget_rollout(self, name: str) -> None:
        """A deleted rollout: its state, status and records leave memory (the store keeps
        the records as history)."""
        self.states.pop(name, None)
        self.status.pop(name, None)
        for attempts in self.records.pop(name, {}).values():
            for record in attempts:
                if not record.is_open:
                    self.by_id.pop(record.id, None)

    def take_dirty(self) -> tuple[set[str], bool]:
        """Components whose records changed and whether any device changed, since last
        asked."""
        dirty, self.dirty_components = self.dirty_components, set()
        changed, self.devices_changed = self.devices_changed, False
        return dirty, changed


def _intern(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None
