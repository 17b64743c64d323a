"""The frozen context of one rollout's pass, and the records and commands it builds.

Every stage of `plan` (classify, tally, budget, steps, choose) reads the same facts:
the rollout's spec, its generation, the clock, the check results the engine ran. They
are fixed for the pass, so they live in one frozen value built once; the stages
return what they decide instead of writing into shared scratch.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetwave.planner.conditions import DecisionReason
from fleetwave.planner.model import (
    AnalysisResults,
    CheckResults,
    DeviceView,
    GateResults,
    RolloutState,
)
from fleetwave.protocol.messages import Command, CommandAction
from fleetwave.protocol.versions import compare, version_key
from fleetwave.resources.model import (
    SCHEDULED_TIME_ANNOTATION,
    Check,
    FailurePolicy,
    Hop,
    Rollout,
)
from fleetwave.resources.model import Health as HealthSpec
from fleetwave.updates.commands import command_for
from fleetwave.updates.model import Health, Reason, UpdateRecord, UpdateState, next_release

LEGACY_OFFLINE_AFTER = 15 * 60.0
"""Seconds without any report after which a legacy device (no `online` topic) is offline."""

TIMEZONE_LABEL = "timezone"
"""Device label naming its IANA zone, for `window.timezone: device`."""

RECORD_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://fleetwave.io/updates")

FAILURE_REASONS = frozenset({Reason.ACK_TIMEOUT, Reason.UPDATE_TIMEOUT, Reason.NO_RESTART,
                             Reason.UNHEALTHY, Reason.OFFLINE_AFTER_UPDATE, Reason.CHECK_FAILED,
                             Reason.DEVICE_REPORTED_FAILURE, DecisionReason.VERSION_MISMATCH})


def record_ids(rollout: str, generation: int, device: str, attempt: int,
               action: str = "update") -> tuple[str, str]:
    """(record id, correlation id) of one attempt: the same every time it is planned.

    A controller that crashed after storing but before publishing plans the same
    attempt again and gets the same ids, so the device sees one command, not two.
    """
    key = f"{rollout}/{generation}/{device}/{attempt}/{action}"
    return (str(uuidlib.uuid5(RECORD_NAMESPACE, "record:" + key)),
            str(uuidlib.uuid5(RECORD_NAMESPACE, "command:" + key)))


def is_offline(device: DeviceView | None, now: float) -> bool:
    """Offline by its `online` flag, or for a legacy device by silence."""
    if device is None:
        return True
    if device.online is not None:
        return not device.online
    return device.last_seen is None or now - device.last_seen > LEGACY_OFFLINE_AFTER


def was_failure(record: UpdateRecord) -> bool:
    """Whether a finished attempt counts against the failure budget."""
    if record.state == UpdateState.FAILED:
        return True
    if record.state == UpdateState.TIMEOUT:
        return record.reason != Reason.UNREACHABLE
    if record.health == Health.UNHEALTHY:
        return True
    if record.state == UpdateState.ROLLED_BACK:
        return record.reason in FAILURE_REASONS or record.error is not None
    return False


def container_checks_pass(checks: Sequence[Check], device: DeviceView, version: str) -> bool:
    """Container checks read from reported state: running, with the expected image.

    `image` may contain `{version}`; "app:{version}" expects the tag of the rollout.
    """
    for check in checks:
        found = next((c for c in device.containers if c.name == check.container), None)
        if found is None or not found.running:
            return False
        if check.image is not None:
            want = check.image.replace("{version}", version)
            have = found.image or ""
            if have != want and not (":" not in want and have.endswith(":" + want)):
                return False
    return True


@dataclass(frozen=True, slots=True)
class PassContext:
    """What one rollout's pass knows before it looks at any device; never changes in it."""

    rollout: Rollout
    name: str
    now: float
    component: str
    version: str
    force: bool
    generation: int
    policy: FailurePolicy
    health: HealthSpec
    container_checks: tuple[Check, ...]
    external_checks: bool
    """Some check (HTTP/TCP) runs in the engine: its result in `check_results` decides."""
    check_results: CheckResults
    steps: int
    parked: frozenset[str]
    released: Mapping[str, float]
    rollback_devices: frozenset[str]
    rollback_all: bool
    """The whole rollout is rolled back (by the policy or a user)."""
    hops: tuple[Hop, ...] = ()
    """`strategy.requires`, lowest `via` first."""
    gate_results: GateResults = field(default_factory=dict)
    analysis_results: AnalysisResults = field(default_factory=dict)
    send_limit: int | None = None
    """At most this many new commands in this pass (the engine's outbox room), None: no
    bound. The rest wait for a later pass, so a record is created close to when its
    command is published and no pass stores a whole 50,000-device wave at once."""

    def gate_open(self, step: int) -> bool:
        """Whether step `step` may start: it has no gate, or its gate answered open."""
        return (self.rollout.spec.strategy.steps[step].gate is None
                or self.gate_results.get((self.name, step)) is True)

    @classmethod
    def build(cls, rollout: Rollout, state: RolloutState, now: float,
              check_results: CheckResults | None,
              gate_results: GateResults | None = None,
              analysis_results: AnalysisResults | None = None,
              send_limit: int | None = None) -> PassContext:
        spec = rollout.spec
        return cls(
            rollout=rollout, name=rollout.name, now=now, component=spec.component,
            version=spec.version, force=spec.force, generation=state.generation,
            policy=spec.failure_policy, health=spec.health,
            container_checks=tuple(c for c in spec.health.checks if c.type == "container"),
            external_checks=any(c.type != "container" for c in spec.health.checks),
            check_results=check_results or {}, steps=len(spec.strategy.steps),
            parked=state.parked, released=state.released,
            rollback_devices=state.rollback_devices,
            rollback_all=state.rolled_back is not None,
            hops=tuple(sorted(spec.strategy.requires,
                              key=lambda h: version_key(h.via) or ((0, 0, 0), None))),
            gate_results=gate_results or {},
            analysis_results=analysis_results or {},
            send_limit=send_limit,
        )

    def target_for(self, reported: str | None) -> str:
        """The version a device reporting `reported` goes to next: the lowest `via` whose
        `below` it is under, else the rollout's version.

        A version that does not compare (not SemVer, or unknown) is never taken to be
        below: such a device goes straight to the target, as without `requires`.
        """
        if reported is not None:
            for hop in self.hops:
                if compare(reported, hop.below) == -1:
                    return hop.via
        return self.version

    def command(self, record: UpdateRecord, action: CommandAction = "update") -> Command:
        """The command a device receives for `record` (update, rollback or cancel)."""
        return command_for(record, action, self.now,
                           self.rollout.spec.health.ack_timeout.total_seconds(),
                           artifact=self.rollout.spec.artifact)

    def update_record(self, device: DeviceView, attempt: int) -> UpdateRecord:
        """A new pending attempt to bring `device` to this rollout's version."""
        rid, cid = record_ids(self.name, self.generation, device.uuid, attempt)
        return UpdateRecord(
            id=rid, device=device.uuid, rollout=self.name, component=self.component,
            to_version=self.target_for(device.versions.get(self.component)),
            state=UpdateState.PENDING, attempt=attempt,
            correlation_id=cid, created_at=self.now, updated_at=self.now,
            from_version=device.versions.get(self.component), generation=self.generation,
            force=self.force,
            scheduled_time=self.rollout.annotations.get(SCHEDULED_TIME_ANNOTATION),
            release=next_release(self.now),
            confirm_after_restart=self.health.confirm_after_restart,
        )

    def rollback_record(self, record: UpdateRecord) -> UpdateRecord:
        """A pending rollback of `record`'s device to the version it came from."""
        assert record.from_version is not None
        rid, cid = record_ids(self.name, self.generation, record.device, record.attempt,
                              "rollback")
        return UpdateRecord(
            id=rid, device=record.device, rollout=self.name, component=record.component,
            to_version=record.from_version, from_version=record.to_version,
            state=UpdateState.PENDING, attempt=record.attempt, correlation_id=cid,
            created_at=self.now, updated_at=self.now, generation=self.generation,
            action="rollback", force=True, release=next_release(self.now),
        )
