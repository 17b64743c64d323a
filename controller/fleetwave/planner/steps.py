"""Stage 4, the step machine: generations, and when a step starts, finishes, pauses or waits.

A step ends when none of its members (every targeted device whose wave hash falls
at or below its cut-off) holds it open any more; then its pause runs, then
manualApproval waits for `promote`, then the next step starts. Like argo-rollouts'
canary steps, the machine only moves forward, and a new version starts again at
the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetwave.planner.analysis import analysis_hold
from fleetwave.planner.conditions import ConditionReason, EventReason
from fleetwave.planner.context import PassContext
from fleetwave.planner.model import PlannedEvent, RolloutState
from fleetwave.resources.model import Rollout


def next_generation(rollout: Rollout, state: RolloutState) -> int:
    """The effective generation after a spec change: never behind the persisted state's.

    The number is counted by Kubernetes or by `resources.generations.count_generation`;
    a state saved by an earlier process may be ahead of a fresh count, and records
    carry the generation, so the planner only refuses to go backwards.

    >>> from fleetwave.planner.model import RolloutState
    >>> class R: generation = 1
    >>> next_generation(R(), RolloutState(generation=4, spec_hash="", version="1"))
    5
    """
    return max(rollout.generation, state.generation + 1)


def start_generation(rollout: Rollout, state: RolloutState | None,
                     now: float) -> tuple[RolloutState, tuple[PlannedEvent, ...]]:
    """The state this pass starts from: initial, the previous one, or a superseding one.

    A new spec cancels open updates to an old version (per device, in classify); a new
    *version* restarts at the first step, so nothing unvalidated skips the canary.
    """
    if state is None:
        return RolloutState.initial(rollout, now), ()
    if state.spec_hash == rollout.spec_hash:
        return state, ()
    spec = rollout.spec
    generation = next_generation(rollout, state)
    common = {
        "generation": generation, "spec_hash": rollout.spec_hash, "version": spec.version,
        "aborted": None, "rolled_back": None,
        "paused_by": state.paused_by if state.paused_by == "user" else None,
        "parked": frozenset(), "released": {}, "rollback_devices": frozenset(),
        "budget_floor": 0,
    }
    if state.version != spec.version:
        new = state.evolve(**common, current_step=0, step_started_at=None,
                           step_finished_at=None, approved_step=0, started_at=None,
                           completed_at=None)
        return new, (
            PlannedEvent("Normal", EventReason.SUPERSEDED,
                         f"version {state.version} superseded by {spec.version}: open updates "
                         f"to {state.version} are cancelled"),
            PlannedEvent("Normal", EventReason.RESTARTED,
                         f"new version {spec.version} restarts at step 1"),
        )
    return state.evolve(**common), (PlannedEvent(
        "Normal", EventReason.SUPERSEDED,
        f"spec changed (generation {generation}), same version {spec.version}: "
        f"continues at step {state.current_step + 1}"),)


@dataclass(frozen=True, slots=True)
class StepMove:
    state: RolloutState
    events: tuple[PlannedEvent, ...]
    note: str | None
    """STEP_PAUSE or AWAITING_APPROVAL when the machine stopped at a step boundary."""
    wake: float | None
    """When the current pause ends."""
    awaiting_gate: int | None = None
    """The step whose webhook gate keeps it from starting."""
    detail: str = ""
    """The status message of an analysis that holds the step."""


def advance_steps(ctx: PassContext, state: RolloutState, open_through: Sequence[int], *,
                  can_move: bool, gate_open: bool) -> StepMove:
    """Start the rollout, finish steps, honour pauses, analyses and approvals, start the
    next step."""
    strategy, now, steps = ctx.rollout.spec.strategy, ctx.now, ctx.steps
    events: list[PlannedEvent] = []
    if can_move and state.started_at is None and gate_open:
        if not ctx.gate_open(0):
            return StepMove(state, (), ConditionReason.GATE_CLOSED, None, awaiting_gate=0)
        state = state.evolve(started_at=now, step_started_at=now, current_step=0)
        events.append(PlannedEvent("Normal", EventReason.STEP_STARTED,
                                   f"step 1/{steps} started ({strategy.steps[0].percent}%)"))
    while can_move and state.started_at is not None and state.completed_at is None:
        i = state.current_step
        if open_through[i] > 0:
            break
        if state.step_finished_at is None:
            state = state.evolve(step_finished_at=now)
            events.append(PlannedEvent("Normal", EventReason.STEP_FINISHED,
                                       f"step {i + 1}/{steps} finished"))
        if i == steps - 1:
            if (held := analysis_hold(ctx, state, i)) is not None:
                return StepMove(state, tuple(events), held.reason, held.wake, detail=held.message)
            state = state.evolve(completed_at=now)
            break
        step = strategy.steps[i]
        assert state.step_finished_at is not None
        pause_end = state.step_finished_at + (step.pause.total_seconds() if step.pause else 0)
        if now < pause_end and state.approved_step <= i:
            return StepMove(state, tuple(events), ConditionReason.STEP_PAUSE, pause_end)
        if (held := analysis_hold(ctx, state, i)) is not None:
            # after the pause: its analysis soaks with it, and `promote` skips only the pause
            return StepMove(state, tuple(events), held.reason, held.wake, detail=held.message)
        if strategy.manual_approval and state.approved_step <= i:
            return StepMove(state, tuple(events), ConditionReason.AWAITING_APPROVAL, None)
        if not ctx.gate_open(i + 1):
            return StepMove(state, tuple(events), ConditionReason.GATE_CLOSED, None,
                            awaiting_gate=i + 1)
        state = state.evolve(current_step=i + 1, step_started_at=now, step_finished_at=None)
        events.append(PlannedEvent(
            "Normal", EventReason.STEP_STARTED,
            f"step {i + 2}/{steps} started ({strategy.steps[i + 1].percent}%)"))
    return StepMove(state, tuple(events), None, None)
