"""The last stage: the phase a pass ends in, its conditions, and the typed status.

Phases are decided most decisive first (an invalid spec over a rollback over an
abort over a pause ...), and every phase change becomes an event, a Warning when a
rollout stopped for a reason other than a planned pause or approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetwave.planner.conditions import (
    ConditionReason,
    ConditionType,
    EventReason,
    merge_conditions,
)
from fleetwave.planner.model import Condition, PlannedEvent, RolloutState
from fleetwave.planner.schedule import Gate
from fleetwave.resources.model import Rollout
from fleetwave.resources.vocabulary import STOPPED_PHASES, Phase


@dataclass(frozen=True, slots=True)
class PhaseVerdict:
    phase: str
    reason: str
    message: str


_STOPPED_BY = {"failure": ConditionReason.FAILURE_BUDGET_EXCEEDED,
               "analysis": ConditionReason.ANALYSIS_FAILED}
"""The condition reason of a rollout the policy stopped, by what fired it."""


def phase_of(rollout: Rollout, state: RolloutState, gate: Gate, invalid: str | None,
             targeted: int, step_note: str | None, detail: str = "") -> PhaseVerdict:
    """The phase after this pass, most decisive first (`detail`: an analysis's message)."""
    steps = len(rollout.spec.strategy.steps)
    step = f"step {state.current_step + 1}/{steps}"
    if invalid is not None:
        return PhaseVerdict(Phase.FAILED, ConditionReason.INVALID_SPEC, invalid)
    if state.rolled_back is not None:
        if state.rolled_back in _STOPPED_BY:
            return PhaseVerdict(Phase.ROLLED_BACK, _STOPPED_BY[state.rolled_back],
                                "rolled back; held until the spec changes")
        return PhaseVerdict(Phase.ROLLED_BACK, ConditionReason.ROLLED_BACK_BY_USER,
                            "rolled back by a user; held until the spec changes")
    if state.aborted is not None:
        who = _STOPPED_BY.get(state.aborted, ConditionReason.ABORTED_BY_USER)
        return PhaseVerdict(Phase.ABORTED, who, "aborted; devices keep what they run")
    if state.paused_by == "failure":
        return PhaseVerdict(Phase.PAUSED, ConditionReason.FAILURE_BUDGET_EXCEEDED,
                            "paused: failure budget exceeded; `resume` to continue")
    if state.paused_by == "analysis":
        return PhaseVerdict(Phase.PAUSED, ConditionReason.ANALYSIS_FAILED,
                            f"paused: {step} analysis failed; `resume` to continue")
    if state.paused_by == "user":
        return PhaseVerdict(Phase.PAUSED, ConditionReason.PAUSED_BY_USER, "paused by a user")
    if rollout.spec.paused:
        return PhaseVerdict(Phase.PAUSED, ConditionReason.PAUSED_BY_SPEC,
                            "paused by spec.paused")
    if targeted == 0:
        return PhaseVerdict(Phase.PENDING, ConditionReason.NO_TARGETS,
                            "no device matches the selector")
    if state.completed_at is not None:
        return PhaseVerdict(Phase.COMPLETED, ConditionReason.ROLLOUT_COMPLETED,
                            f"all {steps} steps finished")
    if not gate.open:
        return PhaseVerdict(Phase.WAITING, gate.reason or ConditionReason.OUTSIDE_WINDOW,
                            gate.message)
    if step_note == ConditionReason.GATE_CLOSED:
        nxt = state.current_step + (2 if state.started_at is not None else 1)
        return PhaseVerdict(Phase.WAITING, step_note,
                            f"step {nxt}/{steps}: waiting for its gate to open")
    if step_note == ConditionReason.STEP_PAUSE:
        return PhaseVerdict(Phase.PAUSED, step_note, f"{step} pause")
    if step_note == ConditionReason.ANALYSIS_UNAVAILABLE:
        return PhaseVerdict(Phase.WAITING, step_note, detail)
    if step_note == ConditionReason.ANALYSIS_RUNNING:
        return PhaseVerdict(Phase.PROGRESSING, step_note, detail)
    if step_note == ConditionReason.AWAITING_APPROVAL:
        return PhaseVerdict(Phase.PAUSED, step_note, f"{step} finished; waiting for `promote`")
    return PhaseVerdict(Phase.PROGRESSING, ConditionReason.STEP_IN_PROGRESS,
                        f"{step} in progress")


OUTSIDE_EVERY_WINDOW = PhaseVerdict(Phase.WAITING, ConditionReason.OUTSIDE_WINDOW,
                                    "outside every device's window")


def phase_event(before: str, after: PhaseVerdict) -> PlannedEvent | None:
    """The event of a phase change (None when the phase stayed)."""
    if before == after.phase:
        return None
    planned = after.reason in (ConditionReason.STEP_PAUSE, ConditionReason.AWAITING_APPROVAL)
    return PlannedEvent("Warning" if after.phase in STOPPED_PHASES and not planned
                        else "Normal", EventReason.PHASE_CHANGED,
                        f"{before} -> {after.phase}: {after.message}")


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Devices this rollout may not touch because of another rollout."""

    conflicted: int = 0
    overridden: int = 0
    conflicts_with: Sequence[str] = ()


def rollout_conditions(previous: Sequence[Condition], verdict: PhaseVerdict, generation: int,
                       now: float, conflicts: Conflicts,
                       invalid: str | None) -> tuple[Condition, ...]:
    """Every condition type, True or False, merged with the previous ones (see
    merge_conditions: a transition time only moves when the status flips)."""
    phase, reason, message = verdict.phase, verdict.reason, verdict.message

    def cond(kind: str, on: bool, why: str, text: str) -> Condition:
        return Condition(kind, "True" if on else "False",
                         why if on else ConditionReason.AS_EXPECTED, text if on else "",
                         now, generation)

    progressing = phase == Phase.PROGRESSING
    overridden = (f"; {conflicts.overridden} overridden by an API update"
                  if conflicts.overridden else "")
    current = [
        Condition(ConditionType.PROGRESSING, "True" if progressing else "False",
                  reason if progressing else (ConditionReason.ROLLOUT_COMPLETED
                                              if phase == Phase.COMPLETED else reason),
                  message, now, generation),
        cond(ConditionType.PAUSED, phase == Phase.PAUSED, reason, message),
        cond(ConditionType.WAITING, phase == Phase.WAITING, reason, message),
        cond(ConditionType.COMPLETED, phase == Phase.COMPLETED, reason, message),
        cond(ConditionType.ABORTED, phase == Phase.ABORTED, reason, message),
        cond(ConditionType.ROLLED_BACK, phase == Phase.ROLLED_BACK, reason, message),
        cond(ConditionType.CONFLICTED, conflicts.conflicted > 0,
             ConditionReason.CONFLICTING_ROLLOUTS,
             f"{conflicts.conflicted} device(s) also targeted by "
             f"{', '.join(sorted(conflicts.conflicts_with))}; neither rollout touches them"
             + overridden),
        cond(ConditionType.FAILED, invalid is not None, ConditionReason.INVALID_SPEC,
             invalid or ""),
    ]
    return merge_conditions(previous, current)
