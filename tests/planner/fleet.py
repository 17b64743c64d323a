"""A pure fake fleet for planner tests: applies a plan's actions and plays devices.

Devices answer through the real update state machine (`fleetwave.updates.transitions`),
so the planner is driven exactly as the engine drives it, minus I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from fleetwave.planner.model import (
    AnalysisResult,
    ClearCommand,
    Decide,
    DeviceView,
    FleetPlan,
    HashCache,
    Plan,
    Republish,
    RolloutState,
    SendCancel,
    SendRollback,
    SendUpdate,
)
from fleetwave.planner.plan import plan_fleet
from fleetwave.protocol.messages import Status, StatusType
from fleetwave.resources.model import Rollout, resource_from
from fleetwave.updates.model import DecisionKind, UpdateRecord
from fleetwave.updates.transitions import apply_decision, apply_status

T0 = 1_790_000_000.0  # 2026-09-21, a fixed clock


def make_rollout(name: str = "agent-1-0-6", *, source: str = "folder", generation: int = 1,
                 **spec: Any) -> Rollout:
    """A Rollout from spec keys written as in YAML (camelCase), with test-friendly defaults."""
    doc_spec: dict[str, Any] = {
        "component": "agent", "version": "1.0.6",
        "selector": {"matchLabels": {"device_type": "rpi4"}},
        "strategy": {"steps": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                     "maxInFlight": 1000},
        "health": {"ackTimeout": "10m", "updateTimeout": "15m", "stableFor": "5m"},
        "failurePolicy": {"maxFailurePercent": 20, "minSample": 5, "action": "pause",
                          "retries": 1, "retryBackoff": "1m", "offlineAfterUpdate": "10m",
                          "rollbackFailedDevices": True},
    }
    for key, value in spec.items():
        if key != "selector" and isinstance(value, dict) and isinstance(doc_spec.get(key), dict):
            doc_spec[key] = {**doc_spec[key], **value}
        else:
            doc_spec[key] = value
    from fleetwave.resources.model import SourceRef
    r = resource_from({"apiVersion": "fleetwave.io/v1alpha1", "kind": "Rollout",
                       "metadata": {"name": name, "generation": generation}, "spec": doc_spec},
                      SourceRef(kind=source))
    assert isinstance(r, Rollout)
    return r


def device(uuid: str, version: str = "1.0.5", online: bool | None = True,
           last_seen: float | None = T0, **labels: str) -> DeviceView:
    return DeviceView(uuid=uuid, versions={"agent": version},
                      labels={"device_type": "rpi4", **labels}, online=online,
                      last_seen=last_seen)


def fleet(n: int, prefix: str = "d", **labels: str) -> list[DeviceView]:
    return [device(f"{prefix}{i:05d}", **labels) for i in range(n)]


Behaviour = Callable[[str, UpdateRecord], str]
"""(device uuid, record) -> "succeed" | "fail" | "silent" (never answers)."""


def always(outcome: str) -> Behaviour:
    return lambda uuid, record: outcome


class FakeFleet:
    """Devices, records and rollout states; `step(now)` plans once and plays the result."""

    def __init__(self, rollouts: list[Rollout], devices: list[DeviceView],
                 behaviour: Behaviour | None = None) -> None:
        self.rollouts = rollouts
        self.devices = {d.uuid: d for d in devices}
        self.records: dict[str, dict[str, list[UpdateRecord]]] = {r.name: {} for r in rollouts}
        self.states: dict[str, RolloutState] = {}
        self.behaviour = behaviour or always("succeed")
        self.cache = HashCache()
        self.sent: list[tuple[float, str, str]] = []  # (time, device, action)
        self.log: list[Plan] = []
        self.check_results: Mapping[tuple[str, str], bool | None] = {}
        self.gate_results: Mapping[tuple[str, int], bool | None] = {}
        self.analysis_results: Mapping[tuple[str, int], AnalysisResult] = {}
        self.boot_ids: dict[str, str] = {}
        """uuid -> the boot id its acknowledgements carry (confirmAfterRestart)."""

    # -- records ----------------------------------------------------------------------------

    def _find(self, record_id: str) -> tuple[str, int, UpdateRecord]:
        for name, by_device in self.records.items():
            for recs in by_device.values():
                for i, r in enumerate(recs):
                    if r.id == record_id:
                        return name, i, r
        raise KeyError(record_id)

    def _put(self, record: UpdateRecord) -> None:
        recs = self.records.setdefault(record.rollout, {}).setdefault(record.device, [])
        for i, r in enumerate(recs):
            if r.id == record.id:
                recs[i] = record
                return
        recs.append(record)

    def _status(self, record: UpdateRecord, kind: StatusType, now: float, **kw: Any) -> None:
        t = apply_status(record, Status(device=record.device, type=kind,
                                        correlation_id=record.correlation_id,
                                        received_at=now, **kw))
        if t.record is not None:
            self._put(t.record)

    # -- one pass ---------------------------------------------------------------------------

    def plan(self, now: float) -> FleetPlan:
        return plan_fleet(self.rollouts, list(self.devices.values()), self.records,
                          self.states, now, check_results=self.check_results,
                          cache=self.cache, gate_results=self.gate_results,
                          analysis_results=self.analysis_results)

    def step(self, now: float) -> FleetPlan:
        fp = self.plan(now)
        for name, p in fp.plans.items():
            self.log.append(p)
            self.states[name] = p.state
            for a in p.actions:
                if isinstance(a, SendUpdate | SendRollback):
                    self._put(a.record)
                    self.sent.append((now, a.record.device, a.record.action))
                    t = apply_decision(a.record, _sent(now))
                    assert t.record is not None
                    self._put(t.record)
                elif isinstance(a, Republish | SendCancel | ClearCommand):
                    pass
                elif isinstance(a, Decide):
                    _, _, r = self._find(a.record_id)
                    t = apply_decision(r, a.decision)
                    if t.record is not None:
                        self._put(t.record)
        self.play(now)
        return fp

    def play(self, now: float) -> None:
        """Every online device answers its open commands at once."""
        for by_device in self.records.values():
            for uuid, recs in by_device.items():
                dev = self.devices.get(uuid)
                if dev is None or dev.online is False:
                    continue
                for r in list(recs):
                    if not r.is_open:
                        continue
                    outcome = self.behaviour(uuid, r)
                    if outcome == "silent":
                        continue
                    self._status(r, StatusType.COMMAND_RECEIVED, now,
                                 boot_id=self.boot_ids.get(uuid))
                    r2 = self._latest(r)
                    self._status(r2, StatusType.STARTED, now)
                    r3 = self._latest(r)
                    if r.action == "rollback":
                        self._status(r3, StatusType.ROLLBACK_SUCCEEDED, now)
                        self.set_version(uuid, r.to_version)
                    elif outcome == "succeed":
                        self._status(r3, StatusType.SUCCEEDED, now, version=r.to_version)
                        self.set_version(uuid, r.to_version)
                    else:
                        self._status(r3, StatusType.FAILED, now, reason="DeviceReportedFailure",
                                     error="boom", exit_code=1)

    def _latest(self, r: UpdateRecord) -> UpdateRecord:
        return self._find(r.id)[2]

    def set_version(self, uuid: str, version: str) -> None:
        d = self.devices[uuid]
        self.devices[uuid] = dataclasses.replace(d, versions={**d.versions, "agent": version})

    def set_online(self, uuid: str, online: bool) -> None:
        self.devices[uuid] = dataclasses.replace(self.devices[uuid], online=online)

    def run(self, start: float, until: float, tick: float = 30.0) -> float:
        now = start
        while now < until:
            self.step(now)
            now += tick
        return now

    def version_of(self, uuid: str) -> str:
        return self.devices[uuid].versions["agent"]

    def updated(self, rollout: str) -> set[str]:
        return {u for u, recs in self.records.get(rollout, {}).items()
                if any(r.action == "update" for r in recs)}


def _sent(now: float) -> Any:
    from fleetwave.updates.model import Decision
    return Decision(DecisionKind.SENT, now)
