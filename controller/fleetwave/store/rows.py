"""Values the store returns and accepts beside `UpdateRecord`: plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetwave.planner.model import DeviceView
from fleetwave.protocol.messages import Status
from fleetwave.updates.model import RANK, Decision, UpdateRecord


def is_newer(incoming_at: float, held_at: float | None) -> bool:
    """The merge rule for liveness reports (state reports: `report_is_newer`), in the store
    (its SQL upserts say the same: `held IS NULL OR held < incoming`) and in the engine's
    memory: a report replaces what is held only when it was received later, so a late
    redelivery never rolls a device back."""
    return held_at is None or held_at < incoming_at


def report_is_newer(incoming_ts: int | None, incoming_at: float,
                    held_ts: int | None, held_at: float | None) -> bool:
    """The rule for state reports, in the store (its SQL upsert says the same) and in the
    engine's memory: by the device's own clock when both reports carry it, else by receive
    time. Replicas stamp receive times of their own, and one restarted onto a backlog in its
    session receives an old report late; the device's clock orders them still."""
    if held_at is None:
        return True
    if incoming_ts is not None and held_ts is not None:
        return held_ts < incoming_ts
    return held_at < incoming_at


def supersedes(incoming: UpdateRecord, held: UpdateRecord | None) -> bool:
    """The same rule for update records: the state machine (updates/transitions.py) only
    moves a record up its `RANK`, so a copy of lower rank is an older read and loses."""
    return held is None or RANK[incoming.state] >= RANK[held.state]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRow(DeviceView):
    """What the controller knows of a device: its last report, liveness and labels.

    It is the planner's `DeviceView` too (`labels` are the reported ones with the
    inventory's merged over them, inventory winning), so the engine holds one object per
    device, not a row and a view of it. `online` is None for devices that never published
    an `online` topic (older agents): liveness is then judged from `last_seen`. A device
    known only from the inventory has `state_received_at` None.
    """

    reported_labels: Mapping[str, str]
    inventory_labels: Mapping[str, str]
    deployment_type: str | None
    state_timestamp: int | None = None
    """The device's own clock (ms) on that report, when it sent one."""
    online_at: float | None = None
    """When its last `online` report arrived (the merge rule of liveness: `is_newer`)."""


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """What one status did: the record before and after, or why it was ignored."""

    status: Status
    before: UpdateRecord | None
    after: UpdateRecord | None
    ignored: str | None

    @property
    def changed(self) -> bool:
        return self.after is not None


@dataclass(frozen=True, slots=True)
class RolloutRow:
    """A rollout's persisted engine state and status, keyed by name."""

    name: str
    generation: int
    spec_hash: str
    state: Mapping[str, Any]
    status: Mapping[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only audit trail; `id` is set when read back."""

    time: float
    rollout: str
    type: str
    reason: str
    message: str
    device: str | None = None
    actor: str = "controller"
    id: int | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of a rollout's events, oldest first, and how many there are in all."""

    items: list[Event]
    total: int


@dataclass(frozen=True, slots=True)
class UpdateStats:
    """Outcome and duration figures of one rollout's updates to one version.

    `success_rate` is succeeded / (succeeded + failed + timeout), None before any
    of those; durations (seconds, from start — or creation when the device sent
    no start — to success) are None without successes.
    """

    rollout: str
    component: str
    version: str
    total: int
    open: int
    succeeded: int
    failed: int
    timeout: int
    cancelled: int
    rolled_back: int
    success_rate: float | None
    duration_p50: float | None
    duration_p95: float | None
    duration_mean: float | None


@dataclass(frozen=True, slots=True)
class RolloutSave:
    """One rollout's engine state and status to store (`store.rollouts.save`'s arguments)."""

    name: str
    generation: int
    spec_hash: str
    state: Mapping[str, Any]
    status: Mapping[str, Any]
    now: float | None = None


@dataclass(frozen=True, slots=True)
class PassWrite:
    """What one reconcile pass writes, all in one transaction (`Store.write_pass`)."""

    created: Sequence[UpdateRecord] = ()
    decisions: Sequence[tuple[str, Decision]] = ()
    events: Sequence[Event] = ()
    saves: Sequence[RolloutSave] = ()
    deletes: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class PassResult:
    """The records a pass inserted (a record refused by the database is missing) and the
    records its decisions changed, in their final form."""

    created: list[UpdateRecord]
    changed: list[UpdateRecord]
