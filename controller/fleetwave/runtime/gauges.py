"""The fleet and rollout gauges on /metrics, set from memory after each pass.

Label values stay bounded: every ad-hoc update (`POST /devices/{uuid}/update`, a rollout
named after its device) is counted under one `rollout="adhoc"`, never under its own name,
so a thousand ad-hoc updates add no series.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from fleetwave.metrics import Metrics, declared_version_counts
from fleetwave.resources.model import Rollout
from fleetwave.resources.vocabulary import Operation
from fleetwave.runtime.desired import is_adhoc
from fleetwave.runtime.fleet import FleetState
from fleetwave.store import DeviceRow
from fleetwave.updates.model import UpdateRecord

ADHOC_LABEL = "adhoc"

_VERSIONS = operator.attrgetter("versions")
_ONLINE = operator.attrgetter("online")


def count_final(metrics: Metrics, record: UpdateRecord) -> None:
    """A record that just became terminal: count it and its duration once.

    Downloads (strategy.download) are left out: they fetch, they do not update, and
    their transfer time is not an update's duration.
    """
    if record.action == Operation.DOWNLOAD:
        return
    metrics.updates.labels(component=record.component, state=record.state.value).inc()
    start = record.sent_at or record.created_at
    end = record.completed_at or record.updated_at
    if end >= start:
        metrics.update_duration.labels(
            component=record.component, state=record.state.value).observe(end - start)


class _Tally:
    """One `rollout` label's figures (several ad-hoc rollouts add up into one)."""

    __slots__ = ("counts", "done", "failure", "phases", "step", "targeted")

    def __init__(self) -> None:
        self.phases: dict[str, int] = {}
        self.step = 0
        self.targeted = 0
        self.done = 0
        self.counts: dict[str, int] = {}
        self.failure = 0.0

    def add(self, status: Mapping[str, Any]) -> None:
        phase = status.get("phase", "Pending")
        self.phases[phase] = self.phases.get(phase, 0) + 1
        self.step = max(self.step, int(status.get("currentStep", 0)))
        self.targeted += int(status.get("targeted", 0))
        self.done += int(status.get("done", 0))
        for state, count in status.get("counts", {}).items():
            self.counts[state] = self.counts.get(state, 0) + count
        self.failure = max(self.failure, float(status.get("failureRate", 0.0)) / 100.0)


def update_gauges(metrics: Metrics, fleet: FleetState, rollouts: Mapping[str, Rollout],
                  now: float) -> None:
    m = metrics
    declared: dict[str, set[str]] = {}
    for declaring in rollouts.values():
        declared.setdefault(declaring.spec.component, set()).add(declaring.spec.version)
    rows = fleet.devices.values()
    versions = declared_version_counts(_distinct_versions(rows), declared)
    online = operator.countOf(map(_ONLINE, rows), True)
    m.devices.clear()
    for (component, version), count in versions.items():
        m.devices.labels(component=component, version=version).set(count)
    m.devices_online.set(online)
    _rollout_gauges(metrics, fleet, rollouts)
    m.stale_updates.set(_stale(fleet, rollouts, now))


def _distinct_versions(rows: Iterable[DeviceRow]) -> list[tuple[Mapping[str, str], int]]:
    """Each versions mapping held with its number of devices, in C-level passes: the fleet
    shares one mapping among devices on the same versions (`FleetState`), so 100,000
    devices are a few mappings, counted by identity (a mapping not shared counts once per
    device, as before)."""
    held = list(map(_VERSIONS, rows))
    by_id = dict(zip(map(id, held), held, strict=True))
    return [(by_id[key], n) for key, n in Counter(map(id, held)).items()]


def _rollout_gauges(m: Metrics, fleet: FleetState, rollouts: Mapping[str, Rollout]) -> None:
    tallies: dict[str, _Tally] = {}
    for name, status in fleet.status.items():
        rollout = rollouts.get(name)
        label = ADHOC_LABEL if rollout is not None and is_adhoc(rollout) else name
        tallies.setdefault(label, _Tally()).add(status)
    for gauge in (m.rollout_phase, m.rollout_devices, m.rollout_step, m.rollout_targeted,
                  m.rollout_failure_ratio, m.rollout_progress):
        gauge.clear()
    for label, t in tallies.items():
        for phase, count in t.phases.items():
            m.rollout_phase.labels(rollout=label, phase=phase).set(count)
        m.rollout_step.labels(rollout=label).set(t.step)
        m.rollout_targeted.labels(rollout=label).set(t.targeted)
        for state, count in t.counts.items():
            m.rollout_devices.labels(rollout=label, state=state).set(count)
        m.rollout_failure_ratio.labels(rollout=label).set(t.failure)
        m.rollout_progress.labels(rollout=label).set(t.done / t.targeted if t.targeted else 0.0)


def _stale(fleet: FleetState, rollouts: Mapping[str, Rollout], now: float) -> int:
    """Open for longer than its rollout's ack and update timeouts together, which the
    planner should never allow: the alert rule for stuck updates reads this."""
    stale = 0
    for record in fleet.open_records():
        rollout = rollouts.get(record.rollout)
        limit = 3600.0 if rollout is None else (
            rollout.spec.health.ack_timeout + rollout.spec.health.update_timeout
        ).total_seconds()
        if now - record.created_at > limit:
            stale += 1
    return stale
