"""Condition types, reasons and event reasons as named constants.

Users filter on these strings (`kubectl wait --for=condition=...`, alert rules),
so they are defined once, in CamelCase as the Kubernetes convention asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetwave.planner.model import Condition
from fleetwave.resources.vocabulary import Phase

__all__ = ["ConditionReason", "ConditionType", "DecisionReason", "EventReason", "Phase",
           "merge_conditions"]


class ConditionType:
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    WAITING = "Waiting"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    ROLLED_BACK = "RolledBack"
    CONFLICTED = "Conflicted"
    FAILED = "Failed"


class ConditionReason:
    # Progressing
    NO_TARGETS = "NoTargetedDevices"
    STEP_IN_PROGRESS = "StepInProgress"
    ROLLOUT_COMPLETED = "RolloutCompleted"
    ROLLOUT_STOPPED = "RolloutStopped"
    # Paused / Waiting: who or what stopped it
    PAUSED_BY_USER = "PausedByUser"
    PAUSED_BY_SPEC = "PausedBySpec"
    STEP_PAUSE = "StepPause"
    AWAITING_APPROVAL = "AwaitingApproval"
    FAILURE_BUDGET_EXCEEDED = "FailureBudgetExceeded"
    NOT_BEFORE = "NotBefore"
    OUTSIDE_WINDOW = "OutsideWindow"
    FREEZE = "Freeze"
    GATE_CLOSED = "GateClosed"
    ANALYSIS_RUNNING = "AnalysisRunning"
    ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"
    ANALYSIS_FAILED = "AnalysisFailed"
    # Aborted / RolledBack
    ABORTED_BY_USER = "AbortedByUser"
    ROLLED_BACK_BY_USER = "RolledBackByUser"
    # Conflicted
    CONFLICTING_ROLLOUTS = "ConflictingRollouts"
    # Failed
    INVALID_SPEC = "InvalidSpec"
    # status False
    AS_EXPECTED = "AsExpected"


class EventReason:
    PHASE_CHANGED = "PhaseChanged"
    STEP_STARTED = "StepStarted"
    STEP_FINISHED = "StepFinished"
    FAILURE_BUDGET_EXCEEDED = "FailureBudgetExceeded"
    SUPERSEDED = "Superseded"
    RESTARTED = "RestartedAtFirstStep"
    DEVICE_PARKED = "DeviceParked"
    DEVICE_RELEASED = "DeviceReleased"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    PROMOTED = "Promoted"
    ABORTED = "Aborted"
    ROLLBACK_REQUESTED = "RollbackRequested"
    DEVICE_ROLLBACK_REQUESTED = "DeviceRollbackRequested"
    ANALYSIS_FAILED = "AnalysisFailed"


class DecisionReason:
    """Reasons the planner puts on decisions beyond `fleetwave.updates.model.Reason`."""

    ROLLOUT_ROLLED_BACK = "RolloutRolledBack"
    VERSION_MISMATCH = "VersionMismatch"


def merge_conditions(previous: Sequence[Condition], current: Sequence[Condition],
                     ) -> tuple[Condition, ...]:
    """Keep each condition's lastTransitionTime while its status is unchanged.

    >>> old = (Condition("Paused", "False", "AsExpected", "", 10.0),)
    >>> new = (Condition("Paused", "False", "AsExpected", "", 50.0),)
    >>> merge_conditions(old, new)[0].last_transition_time
    10.0
    """
    before = {c.type: c for c in previous}
    out = []
    for c in current:
        old = before.get(c.type)
        if old is not None and old.status == c.status:
            if (old.reason, old.message, old.observed_generation) == (
                    c.reason, c.message, c.observed_generation):
                out.append(old)
            else:
                out.append(Condition(c.type, c.status, c.reason, c.message,
                                     old.last_transition_time, c.observed_generation))
        else:
            out.append(c)
    return tuple(out)
