"""One pass's writes, gathered from its plans: what the store commits in one transaction,
and afterwards what the outbox publishes.

Pure: reads memory, builds values; the reconciler does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fleetwave.planner.model import (
    ClearCommand,
    Decide,
    Plan,
    Republish,
    SendCancel,
    SendRollback,
    SendUpdate,
)
from fleetwave.resources.model import Rollout
from fleetwave.runtime.checks import CheckTarget
from fleetwave.runtime.desired import DesiredState, stored_state
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.outbox import Outgoing
from fleetwave.store import Event, PassWrite, RolloutSave
from fleetwave.updates.model import Decision, Health, UpdateRecord, UpdateState


class PassBuilder:
    """Collects every rollout's plan of one pass."""

    def __init__(self, fleet: FleetState, desired: DesiredState, now: float) -> None:
        self.fleet = fleet
        self.desired = desired
        self.now = now
        self.created: list[UpdateRecord] = []
        self.decisions: list[tuple[str, Decision]] = []
        self.events: list[Event] = []
        self.saves: list[RolloutSave] = []
        self.deletes: list[str] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        self.saved: list[str] = []
        """Rollouts whose state or status changed (saved, and told to `on_status`)."""
        self._plans: list[Plan] = []
        self._rolled_back: list[tuple[str, dict[str, Any]]] = []

    def add(self, name: str, plan: Plan, rollout: Rollout | None) -> None:
        self._plans.append(plan)
        for action in plan.actions:
            if isinstance(action, SendUpdate | SendRollback):
                self.created.append(action.record)
            elif isinstance(action, Decide):
                self.decisions.append((action.record_id, action.decision))
        status = plan.status.to_dict()
        if rollout is not None:
            status["revision"] = rollout.source.revision
            status["observedGeneration"] = rollout.generation
        held = self.fleet.status.get(name)
        changed = self.fleet.states.get(name) != plan.state or held != status
        if (rollout is not None and status.get("phase") == "RolledBack"
                and (held or {}).get("phase") != "RolledBack"):
            self._rolled_back.append((name, status))
        self.statuses[name] = status
        self.events += [Event(time=self.now, rollout=name, type=e.type, reason=e.reason,
                              message=e.message, device=e.device, actor="controller")
                        for e in plan.events]
        if rollout is not None and (changed or plan.events):
            generation, digest = self.desired.generation_of(rollout)
            self.saves.append(RolloutSave(name, generation, digest,
                                          stored_state(rollout, plan.state), status))
            self.saved.append(name)

    def delete(self, names: Sequence[str]) -> None:
        self.deletes += names

    def write(self) -> PassWrite:
        return PassWrite(created=self.created, decisions=self.decisions, events=self.events,
                         saves=self.saves, deletes=self.deletes)

    def rolled_back(self) -> list[tuple[str, dict[str, Any]]]:
        return self._rolled_back

    def outgoing(self) -> list[Outgoing]:
        """What to publish, in plan order, once the records are stored and remembered."""
        out: list[Outgoing] = []
        by_id = self.fleet.by_id
        for plan in self._plans:
            for action in plan.actions:
                if isinstance(action, SendUpdate | SendRollback | Republish):
                    known = by_id.get(action.record.id)
                    if known is None or not known.is_open:
                        continue  # lost a race with another replica, or already done
                    # The store may have raised the release above one it already holds.
                    command = replace(action.command, release=known.release)
                    out.append(Outgoing(known.device, command, known.id))
                elif isinstance(action, SendCancel):
                    out.append(Outgoing(action.record.device, action.command))
                elif isinstance(action, ClearCommand):
                    out.append(Outgoing(action.device, None))
        return out


def start_checks(fleet: FleetState, desired: Mapping[str, Rollout], now: float,
                 checked_at: dict[tuple[str, str], float],
                 every: float = 5.0) -> list[CheckTarget]:
    """HTTP and TCP checks due: devices that succeeded and are not judged yet."""
    targets: list[CheckTarget] = []
    for name, rollout in desired.items():
        checks = tuple(c for c in rollout.spec.health.checks if c.type in ("http", "tcp"))
        if not checks:
            continue
        for device, attempts in fleet.records.get(name, {}).items():
            latest = attempts[-1]
            key = (name, device)
            if (latest.action != "update" or latest.state != UpdateState.SUCCEEDED
                    or latest.health != Health.UNKNOWN
                    or now - checked_at.get(key, 0.0) < every):
                continue
            checked_at[key] = now
            view = fleet.devices.get(device)
            targets.append(CheckTarget(name, device, view.ip if view else None,
                                       view.name if view else None, checks))
    return targets
