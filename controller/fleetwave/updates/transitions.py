"""The per-device update state machine, as pure functions over immutable records.

QoS 1 redelivers, devices reboot mid-update and the controller restarts, so every
message may arrive twice, late or out of order. Keeping the rules here, free of
I/O, lets the store apply them inside a transaction and lets tests drive them
exhaustively. A transition either returns the new record or says, as a short
stable token, why the input changed nothing.

    pending -> acknowledged -> scheduled -> in_progress -> succeeded | failed | timeout | cancelled
    in_progress -> awaiting_restart -> succeeded          (health.confirmAfterRestart)
    any terminal state (and succeeded in particular) -> rolled_back

Records only move to a higher `RANK`; intermediate states may be skipped (a
device may report `update_started` without `update_command_received`), and
each state's timestamp is set once, by the first message that reaches it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetwave.protocol.messages import Status, StatusType
from fleetwave.updates.model import (
    RANK,
    Decision,
    DecisionKind,
    Health,
    Reason,
    UpdateRecord,
    UpdateState,
)


class Ignored:
    """Why an input changed nothing: stable tokens, counted and logged by callers."""

    WRONG_DEVICE = "wrong_device"
    DUPLICATE = "duplicate"
    BACKWARDS = "backwards"
    TERMINAL = "terminal"
    STALE_PROGRESS = "stale_progress"
    NOT_A_ROLLBACK = "not_a_rollback"
    NOT_SUCCEEDED = "not_succeeded"
    OPEN = "open"
    UNKNOWN_UPDATE = "unknown_update"
    NO_OPEN_UPDATE = "no_open_update"
    AMBIGUOUS = "ambiguous"
    NOT_CONFIRMED = "not_confirmed"
    NOT_RESTARTED = "not_restarted"


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one input: a new record, or None and the reason it was a no-op."""

    record: UpdateRecord | None
    ignored: str | None = None

    @property
    def changed(self) -> bool:
        return self.record is not None


_FIELDS = tuple(f.name for f in dataclasses.fields(UpdateRecord))


def _evolve(record: UpdateRecord, **changes: Any) -> UpdateRecord:
    """`dataclasses.replace` without its generic checks: the ingest calls it per message."""
    values = {name: getattr(record, name) for name in _FIELDS}
    values.update(changes)
    return UpdateRecord(**values)


def _ignore(reason: str) -> Transition:
    return Transition(None, reason)


STATUS_TARGET: Mapping[StatusType, UpdateState] = {
    StatusType.COMMAND_RECEIVED: UpdateState.ACKNOWLEDGED,
    StatusType.SCHEDULED: UpdateState.SCHEDULED,
    StatusType.STARTED: UpdateState.IN_PROGRESS,
    StatusType.PROGRESS: UpdateState.IN_PROGRESS,
    StatusType.SUCCEEDED: UpdateState.SUCCEEDED,
    StatusType.FAILED: UpdateState.FAILED,
    StatusType.CANCELLED: UpdateState.CANCELLED,
    StatusType.ROLLBACK_SUCCEEDED: UpdateState.ROLLED_BACK,
    StatusType.ROLLBACK_FAILED: UpdateState.FAILED,
}
"""The state each status type moves a record to (rollback_failed only on rollback records)."""

STATE_TIMESTAMP: Mapping[UpdateState, str] = {
    UpdateState.ACKNOWLEDGED: "acknowledged_at",
    UpdateState.SCHEDULED: "scheduled_at",
    UpdateState.IN_PROGRESS: "started_at",
    UpdateState.SUCCEEDED: "completed_at",
    UpdateState.FAILED: "completed_at",
    UpdateState.TIMEOUT: "completed_at",
    UpdateState.CANCELLED: "completed_at",
    UpdateState.ROLLED_BACK: "rolled_back_at",
}
"""The field stamped when a record first reaches each state (pending has created_at)."""

BOOT_MARKS: frozenset[StatusType] = frozenset({StatusType.COMMAND_RECEIVED,
                                               StatusType.SCHEDULED, StatusType.STARTED})
"""Statuses sent before the install: the boot id they carry is the one a restart changes.
A later status (success after the reboot) must not be taken for it."""


def _move(record: UpdateRecord, state: UpdateState, at: float,
          **changes: Any) -> UpdateRecord:
    """`record` in `state`, its state timestamp set if still unset, plus `changes`."""
    field = STATE_TIMESTAMP.get(state)
    if field is not None and getattr(record, field) is None:
        changes[field] = at
    return _evolve(record, state=state, updated_at=max(record.updated_at, at),
                               **changes)


def _check_rank(record: UpdateRecord, target: UpdateState) -> str | None:
    """The reason a move from record.state to target is not allowed, or None."""
    if record.state == target:
        return Ignored.DUPLICATE
    if record.is_terminal and target != UpdateState.ROLLED_BACK:
        return Ignored.TERMINAL
    if RANK[target] < RANK[record.state]:
        return Ignored.BACKWARDS
    if RANK[target] == RANK[record.state]:
        return Ignored.TERMINAL
    return None


def apply_status(record: UpdateRecord, status: Status) -> Transition:
    """The record after a device's status, or why the status changes nothing."""
    if status.device != record.device:
        return _ignore(Ignored.WRONG_DEVICE)
    at = status.received_at
    if status.type == StatusType.ROLLBACK_FAILED:
        return _rollback_failed(record, status)
    if status.type == StatusType.PROGRESS and record.state == UpdateState.IN_PROGRESS:
        if status.percent is None or (record.progress is not None
                                      and status.percent <= record.progress):
            return _ignore(Ignored.STALE_PROGRESS)
        return Transition(_evolve(record, progress=_percent(status.percent),
                                              updated_at=max(record.updated_at, at)))
    target = STATUS_TARGET[status.type]
    if target == UpdateState.SUCCEEDED and record.confirm_after_restart \
            and record.action == "update":
        target = UpdateState.AWAITING_RESTART  # a state under a new boot id settles it
    refused = _check_rank(record, target)
    if refused is not None:
        return _ignore(refused)
    changes: dict[str, Any] = {}
    if status.boot_id is not None and record.boot_id is None and status.type in BOOT_MARKS:
        changes["boot_id"] = status.boot_id
    if status.type == StatusType.STARTED and record.from_version is None \
            and status.current_version is not None:
        changes["from_version"] = status.current_version
    if status.type == StatusType.PROGRESS and status.percent is not None:
        changes["progress"] = _percent(status.percent)
    if target in (UpdateState.SUCCEEDED, UpdateState.AWAITING_RESTART):
        changes["progress"] = 100
    if target == UpdateState.FAILED:
        changes.update(reason=status.reason or Reason.DEVICE_REPORTED_FAILURE,
                       error=status.error, exit_code=status.exit_code)
    return Transition(_move(record, target, at, **changes))


def confirm_by_state(record: UpdateRecord, versions: Mapping[str, str],
                     received_at: float, boot_id: str | None = None) -> Transition:
    """An open update settled `succeeded` because the device's reported state, received
    after the record was created, shows the target version.

    Statuses can be lost (acknowledged before a crash stored them, dropped across a broker
    restart); the retained state cannot, and it is delivered again on every resync. Without
    this rule such an update would time out although the device runs the new version, and
    the audit trail would say the opposite of what happened. The record's creation, not its
    `sent_at`, is the bound: a command published just before a crash has no `sent_at`, and
    the planner only creates an update for a device it saw on another version. Forced
    updates (the device was on that version already) and rollbacks wait for their status.

    With `confirm_after_restart` the state is the only confirmation, forced or not: it
    must also carry a boot id other than the one the device acknowledged under. A device
    that never said its boot id cannot show a restart, and times out (`Reason.NO_RESTART`).
    """
    if not record.is_open:
        return _ignore(Ignored.TERMINAL)
    if record.action != "update":
        return _ignore(Ignored.NOT_CONFIRMED)
    if versions.get(record.component) != record.to_version or received_at <= record.created_at:
        return _ignore(Ignored.NOT_CONFIRMED)
    if record.confirm_after_restart:
        if record.boot_id is None or boot_id is None or boot_id == record.boot_id:
            return _ignore(Ignored.NOT_RESTARTED)
        return Transition(_move(record, UpdateState.SUCCEEDED, received_at, progress=100,
                                reason=Reason.CONFIRMED_AFTER_RESTART))
    if record.force:
        return _ignore(Ignored.NOT_CONFIRMED)
    return Transition(_move(record, UpdateState.SUCCEEDED, received_at, progress=100,
                            reason=Reason.CONFIRMED_BY_REPORTED_STATE))


def _rollback_failed(record: UpdateRecord, status: Status) -> Transition:
    """A rollback record fails; on an update record the device's error is only noted.

    The agent rolls back on its own after a failed update and says so with
    rollback_* statuses on the update's correlation id: a failed rollback then
    leaves the record failed, with the rollback's error kept for the operator.
    """
    error = status.error or status.reason or "rollback failed"
    if record.action == "rollback":
        refused = _check_rank(record, UpdateState.FAILED)
        if refused is not None:
            return _ignore(refused)
        return Transition(_move(record, UpdateState.FAILED, status.received_at,
                                reason=status.reason or Reason.DEVICE_REPORTED_FAILURE,
                                error=error, exit_code=status.exit_code))
    if record.state != UpdateState.FAILED:
        return _ignore(Ignored.NOT_A_ROLLBACK)
    note = f"rollback failed: {error}"
    if record.error is not None and note in record.error:
        return _ignore(Ignored.DUPLICATE)
    combined = note if record.error is None else f"{record.error}; {note}"
    return Transition(_evolve(record, error=combined,
                                          updated_at=max(record.updated_at,
                                                         status.received_at)))


def _percent(value: int) -> int:
    return max(0, min(100, value))


def apply_decision(record: UpdateRecord, decision: Decision) -> Transition:
    """The record after a controller decision (timeout, cancel, health, ...), or why not."""
    at = decision.at
    kind = decision.kind
    if kind == DecisionKind.SENT:
        if not record.is_open:
            return _ignore(Ignored.TERMINAL)
        if record.sent_at is not None and record.sent_at >= at:
            return _ignore(Ignored.DUPLICATE)
        return Transition(_evolve(record, sent_at=at,
                                              updated_at=max(record.updated_at, at)))
    if kind in (DecisionKind.TIMEOUT, DecisionKind.CANCEL):
        target = UpdateState.TIMEOUT if kind == DecisionKind.TIMEOUT else UpdateState.CANCELLED
        refused = _check_rank(record, target)
        if refused is not None:
            return _ignore(refused)
        reason = decision.reason or _default_reason(record, kind)
        changes: dict[str, Any] = {"reason": reason}
        if decision.message is not None:
            changes["error"] = decision.message
        return Transition(_move(record, target, at, **changes))
    if kind in (DecisionKind.HEALTHY, DecisionKind.UNHEALTHY):
        if record.state != UpdateState.SUCCEEDED:
            return _ignore(Ignored.NOT_SUCCEEDED)
        health = Health.HEALTHY if kind == DecisionKind.HEALTHY else Health.UNHEALTHY
        # Unknown -> healthy | unhealthy, healthy -> unhealthy (a device that goes silent
        # later); never unhealthy -> healthy: the failure has already been counted.
        if record.health in (health, Health.UNHEALTHY):
            return _ignore(Ignored.DUPLICATE)
        changes = {"health": health, "health_at": at, "updated_at": max(record.updated_at, at)}
        if health == Health.UNHEALTHY:
            changes["reason"] = decision.reason or Reason.UNHEALTHY
            if decision.message is not None:
                changes["error"] = decision.message
        return Transition(_evolve(record, **changes))
    # DecisionKind.ROLLED_BACK
    if record.is_open:
        return _ignore(Ignored.OPEN)
    refused = _check_rank(record, UpdateState.ROLLED_BACK)
    if refused is not None:
        return _ignore(refused)
    return Transition(_move(record, UpdateState.ROLLED_BACK, at))


def _default_reason(record: UpdateRecord, kind: DecisionKind) -> str:
    if kind == DecisionKind.CANCEL:
        return Reason.CANCELLED_BY_USER
    return Reason.ACK_TIMEOUT if record.state == UpdateState.PENDING else Reason.UPDATE_TIMEOUT


def pick_legacy_record(status: Status, candidates: Iterable[UpdateRecord],
                       component: str | None = None) -> Transition:
    """The record a status without correlation id belongs to, as a Transition-like answer.

    Older agents send no correlation id, so a status attaches to the device's one
    open update (of `component` when the caller knows it). With several open
    updates the status's version, if any, must name exactly one of them. A
    rollback_* status may also follow an update that already ended (the agent
    rolls back after reporting failure): it then attaches to the newest record.
    Returns the record chosen, unchanged, or None and why.
    """
    mine = [r for r in candidates if r.device == status.device
            and (component is None or r.component == component)]
    open_ = [r for r in mine if r.is_open]
    if len(open_) > 1:
        version = status.target_version or status.version
        open_ = [r for r in open_ if version is not None and r.to_version == version]
        if len(open_) != 1:
            return _ignore(Ignored.AMBIGUOUS)
    if open_:
        return Transition(open_[0])
    if status.type in (StatusType.ROLLBACK_SUCCEEDED, StatusType.ROLLBACK_FAILED) and mine:
        newest = max(mine, key=lambda r: (r.created_at, r.attempt))
        return Transition(newest)
    return _ignore(Ignored.NO_OPEN_UPDATE)
