"""What the planner reads and what it returns, as immutable values.

The planner is a pure function of these: the engine builds the inputs from its
in-memory fleet, calls `plan_fleet`, executes the actions and persists the new
`RolloutState`. Keeping them frozen and slotted lets one pass over 100,000
devices stay cheap in memory and makes "same inputs, same plan" checkable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fleetwave.planner.waves import device_hash, thresholds
from fleetwave.protocol.messages import Command, Container
from fleetwave.resources.model import Rollout
from fleetwave.updates.model import Decision, UpdateRecord

PausedBy = Literal["user", "failure", "analysis"]
StoppedBy = Literal["user", "failure", "analysis"]
"""Who stopped a rollout: a user, the failure budget, or a step's analysis."""

CheckResults = Mapping[tuple[str, str], bool | None]
"""(rollout name, device uuid) -> result of the HTTP/TCP checks the engine ran
(None: not run yet). The planner never does I/O, so it only reads results."""

GateResults = Mapping[tuple[str, int], bool | None]
"""(rollout name, 0-based step) -> the step's gate answer (True: open; False: closed;
None: not answered yet). The engine's gate runner asks; the planner only reads."""

AnalysisOutcome = Literal["in_bounds", "out_of_bounds", "unavailable"]


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """The latest answer to a step's analysis query, and since when it has said so."""

    outcome: AnalysisOutcome
    """`unavailable`: no answer, an error, no data, or not one number (never a pass)."""
    since: float
    """When this outcome was first seen in an unbroken run of equal answers."""
    value: float | None = None
    detail: str = ""
    """Why it is unavailable, for the status message."""


AnalysisResults = Mapping[tuple[str, int], AnalysisResult]
"""(rollout name, 0-based step) -> what its analysis query answers. The engine's analysis
runner queries while the step soaks; the planner only reads."""


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device as the planner sees it: reported state merged with inventory labels."""

    uuid: str
    versions: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    online: bool | None = None
    """None: a legacy device without an `online` topic, judged by `last_seen`."""
    last_seen: float | None = None
    ip: str | None = None
    name: str | None = None
    containers: tuple[Container, ...] = ()
    state_received_at: float | None = None
    """When the device's reported state last arrived (None: unknown). A success status
    can arrive before the state showing the new version; health waits for the state."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A Kubernetes-style condition; lastTransitionTime only moves when status flips."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: float
    observed_generation: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The API and CR form: lastTransitionTime in RFC 3339, as Kubernetes shows it."""
        return {**self.to_json(), "lastTransitionTime": _rfc3339(self.last_transition_time)}

    def to_json(self) -> dict[str, Any]:
        """The stored form (beside RolloutState): the exact float time, read by from_json."""
        return {
            "type": self.type, "status": self.status, "reason": self.reason,
            "message": self.message, "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Condition:
        return cls(doc["type"], doc["status"], doc["reason"], doc["message"],
                   float(doc["lastTransitionTime"]), int(doc.get("observedGeneration", 1)))


def _rfc3339(t: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RolloutState:
    """What the engine persists per rollout between passes (JSON via to_json/from_json).

    Everything else the planner needs is derived each pass from records and
    devices, so a crashed controller rebuilds the same plan from this and the store.
    """

    generation: int
    """Effective generation: bumped whenever spec_hash changes (folder/git homes have no
    Kubernetes generation). Update records carry it."""
    spec_hash: str
    version: str
    phase: str = "Pending"
    current_step: int = 0
    """0-based index into strategy.steps."""
    step_started_at: float | None = None
    step_finished_at: float | None = None
    """When every member of current_step became terminal: the step's pause counts from here."""
    approved_step: int = 0
    """Highest step index allowed to start under manualApproval (promote raises it)."""
    paused_by: PausedBy | None = None
    aborted: StoppedBy | None = None
    rolled_back: StoppedBy | None = None
    """Set by the failure policy or the user: the rollout is held until its spec changes."""
    tokens: float | None = None
    """maxPerMinute token bucket level (None: full)."""
    tokens_at: float | None = None
    ramp_since: float | None = None
    """When the ramp's current climb began (None: not started, or reset by a pause)."""
    parked: frozenset[str] = frozenset()
    """Penalty box: devices that failed retries+1 times in this generation."""
    released: Mapping[str, float] = field(default_factory=dict)
    """device -> time of `promote --device`: failures before it no longer count."""
    rollback_devices: frozenset[str] = frozenset()
    """Devices a user asked to put back on their previous version."""
    budget_floor: int = 0
    """Failures already seen when a user resumed after a failure pause: only new ones count."""
    failures: int = 0
    """Failures counted in the last pass (what `resume` records as budget_floor)."""
    started_at: float | None = None
    completed_at: float | None = None
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def initial(cls, rollout: Rollout, now: float) -> RolloutState:
        """The state of a rollout never planned before."""
        del now
        return cls(generation=rollout.generation, spec_hash=rollout.spec_hash,
                   version=rollout.spec.version)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (the engine stores it beside the rollout)."""
        return {
            "generation": self.generation, "specHash": self.spec_hash, "version": self.version,
            "phase": self.phase, "currentStep": self.current_step,
            "stepStartedAt": self.step_started_at, "stepFinishedAt": self.step_finished_at,
            "approvedStep": self.approved_step, "pausedBy": self.paused_by,
            "aborted": self.aborted, "rolledBack": self.rolled_back,
            "tokens": self.tokens, "tokensAt": self.tokens_at, "rampSince": self.ramp_since,
            "parked": sorted(self.parked), "released": dict(sorted(self.released.items())),
            "rollbackDevices": sorted(self.rollback_devices),
            "budgetFloor": self.budget_floor, "failures": self.failures,
            "startedAt": self.started_at, "completedAt": self.completed_at,
            "conditions": [c.to_json() for c in self.conditions],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | str) -> RolloutState:
        if isinstance(doc, str):
            import json
            doc = json.loads(doc)
            assert isinstance(doc, Mapping)
        return cls(
            generation=int(doc["generation"]), spec_hash=str(doc["specHash"]),
            version=str(doc["version"]), phase=str(doc.get("phase", "Pending")),
            current_step=int(doc.get("currentStep", 0)),
            step_started_at=doc.get("stepStartedAt"), step_finished_at=doc.get("stepFinishedAt"),
            approved_step=int(doc.get("approvedStep", 0)), paused_by=doc.get("pausedBy"),
            aborted=doc.get("aborted"), rolled_back=doc.get("rolledBack"),
            tokens=doc.get("tokens"), tokens_at=doc.get("tokensAt"),
            ramp_since=doc.get("rampSince"),
            parked=frozenset(doc.get("parked", ())),
            released={str(k): float(v) for k, v in doc.get("released", {}).items()},
            rollback_devices=frozenset(doc.get("rollbackDevices", ())),
            budget_floor=int(doc.get("budgetFloor", 0)), failures=int(doc.get("failures", 0)),
            started_at=doc.get("startedAt"), completed_at=doc.get("completedAt"),
            conditions=tuple(Condition.from_json(c) for c in doc.get("conditions", ())),
        )

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendUpdate:
    """Store `record` (a new pending attempt), then publish `command` retained."""

    record: UpdateRecord
    command: Command


@dataclass(frozen=True, slots=True)
class Republish:
    """Publish an unacknowledged command again, same correlation id."""

    record: UpdateRecord
    command: Command


@dataclass(frozen=True, slots=True)
class Decide:
    """Apply a controller decision to a record through the update state machine."""

    record_id: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class SendCancel:
    """Publish a `cancel` for an open record (retained, replacing its update command)."""

    record: UpdateRecord
    command: Command


@dataclass(frozen=True, slots=True)
class SendRollback:
    """Store `record` (action="rollback", to_version = the previous version), publish it."""

    record: UpdateRecord
    command: Command


@dataclass(frozen=True, slots=True)
class ClearCommand:
    """Clear the device's retained command (zero-length retained publish)."""

    device: str


Action = SendUpdate | Republish | Decide | SendCancel | SendRollback | ClearCommand

DEVICE_COMMANDS = (SendUpdate, Republish, SendCancel, SendRollback)
"""Actions that publish something a device acts on."""


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """An audit-trail event: every phase transition, step, failure action, supersede."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    device: str | None = None


# -- outputs -------------------------------------------------------------------------------

COUNT_KEYS = ("pending", "acknowledged", "scheduled", "in_progress", "awaiting_restart",
              "succeeded", "failed", "timeout", "cancelled", "rolled_back", "unhealthy",
              "unreachable", "parked", "upToDate", "conflicted", "overridden", "downloading",
              "downloaded")
"""Keys of `status.counts`: each update state, plus what the planner distinguishes
(unhealthy successes, unreachable timeouts, the penalty box, devices already at the
version, devices left to another rollout, and strategy.download's devices fetching ahead
or fetched and waiting for their install window)."""


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """The rollout's status as DESIGN section 8 names it (camelCase in `to_dict`)."""

    phase: str
    current_step: int
    observed_generation: int
    revision: str | None
    targeted: int
    counts: Mapping[str, int]
    failure_rate: float
    done: int
    message: str
    conditions: tuple[Condition, ...]
    steps: int = 0

    @property
    def progress(self) -> str:
        """"done/targeted" for printer columns only; readers use `done` and `targeted`."""
        return f"{self.done}/{self.targeted}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "currentStep": self.current_step,
            "steps": self.steps,
            "observedGeneration": self.observed_generation, "revision": self.revision,
            "targeted": self.targeted, "counts": dict(self.counts),
            "failureRate": round(self.failure_rate, 2), "done": self.done,
            "progress": self.progress,
            "message": self.message,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    state: RolloutState
    status: RolloutStatus
    events: tuple[PlannedEvent, ...]
    next_wake: float | None
    """The earliest time the clock alone changes this plan (None: only new input does)."""
    settled: bool = False
    """Planning again with the same inputs and `state` before `next_wake` gives this plan
    again: no actions, no events, and the state it was given came back unchanged (the
    token bucket's clock aside). Only a settled plan may be reused (plan_fleet's
    `unchanged`)."""
    awaiting_gate: int | None = None
    """The 0-based step whose gate must open before it starts (the engine asks it)."""
    awaiting_analysis: int | None = None
    """The 0-based step whose analysis runs now (the engine queries it until this changes)."""
    held_back: bool = False
    """The send limit left devices that could go now for a later pass: the engine plans
    again when its outbox has room (never settled)."""

    def reusable(self, rollout: Rollout, state: RolloutState | None, now: float) -> bool:
        """Whether this plan still stands for `rollout` in `state` at `now`, inputs unchanged."""
        return (self.settled and state is not None and state == self.state
                and state.spec_hash == rollout.spec_hash
                and (self.next_wake is None or now < self.next_wake))


@dataclass(frozen=True, slots=True)
class FleetPlan:
    plans: dict[str, Plan]
    next_wake: float | None
    replanned: frozenset[str] = frozenset()
    """Rollouts planned in this call; the others' plans are the `unchanged` ones reused
    as they were (nothing to execute, persist or report for them)."""


class HashCache:
    """Memo of wave order keyed by rollout name: device hashes and the steps' cut-offs.

    Pure in effect: it only saves recomputing blake2b for devices seen before and
    re-sorting a targeted set that did not change; a fresh cache gives the same plan.
    The engine keeps one across passes.
    """

    __slots__ = ("_aligned", "_orders", "by_rollout")

    def __init__(self) -> None:
        self.by_rollout: dict[str, dict[str, int]] = {}
        self._aligned: dict[str, tuple[list[str], list[int]]] = {}
        self._orders: dict[str, tuple[list[int], tuple[float, ...], list[int]]] = {}

    def for_rollout(self, name: str) -> dict[str, int]:
        table = self.by_rollout.get(name)
        if table is None:
            table = self.by_rollout[name] = {}
        return table

    def wave_hashes(self, name: str, devices: Sequence[DeviceView]) -> list[int]:
        """The wave hash of each of `devices`, in order.

        When the rollout targets the same uuids in the same order as last time (the
        common case: a pass changes records and versions, not who is targeted), the
        previous list comes back as is: one pointer comparison per device instead of
        a dictionary probe, which at a million devices is most of a probe's cost.
        """
        uuids = [d.uuid for d in devices]
        hit = self._aligned.get(name)
        if hit is not None and hit[0] == uuids:
            return hit[1]
        table = self.for_rollout(name)
        hashes = []
        for uuid in uuids:
            h = table.get(uuid)
            if h is None:
                h = table[uuid] = device_hash(name, uuid)
            hashes.append(h)
        self._aligned[name] = (uuids, hashes)
        return hashes

    def thresholds(self, name: str, percents: Sequence[float], hashes: list[int]) -> list[int]:
        """`waves.thresholds` of the targeted `hashes`, sorted only when they changed.

        The same devices in the same order give the same list (compared by identity
        of the cached ints, so a million cost milliseconds, not a sort).
        """
        key = tuple(percents)
        hit = self._orders.get(name)
        if hit is not None and hit[1] == key and (hit[0] is hashes or hit[0] == hashes):
            return hit[2]
        limits = thresholds(key, sorted(hashes))
        self._orders[name] = (hashes, key, limits)
        return limits

    def forget(self, name: str) -> None:
        """Drop a deleted rollout's memo."""
        self.by_rollout.pop(name, None)
        self._aligned.pop(name, None)
        self._orders.pop(name, None)
