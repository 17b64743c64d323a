"""Stage 3b, a step's analysis (`analysis.prometheus`): when its metric lets the step move
on, and when it fails the rollout.

The engine's analysis runner queries Prometheus while a step runs and soaks, and hands
the planner, per (rollout, step), the latest outcome and since when it has held
(`AnalysisResult`). Time counts only inside the step: a run out of bounds from the
step's start, a run in bounds from when its wave finished (the soak), so samples taken
before the step's devices updated never pass it. `unavailable`, or no answer yet, keeps
the step from finishing and is never a pass; it is not a failure either.

Worked example, `for: 5m` (300 s), step started at t=0, its wave finished at t=100: in
bounds since t=40 passes at t=400 (100 + 300); out of bounds since t=40 fails the
rollout at t=340 (40 + 300), whatever the wave is doing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetwave.planner.budget import apply_failure_action
from fleetwave.planner.conditions import ConditionReason, EventReason
from fleetwave.planner.context import PassContext
from fleetwave.planner.model import AnalysisResult, PlannedEvent, RolloutState
from fleetwave.resources.durations import format_duration
from fleetwave.resources.model import PrometheusAnalysis


@dataclass(frozen=True, slots=True)
class AnalysisVerdict:
    """This stage's result: the state with a failed analysis's policy action applied."""

    state: RolloutState
    events: tuple[PlannedEvent, ...] = ()
    replan_now: bool = False
    """A rollback was just ordered: the next pass (at once) sends the rollbacks."""
    wake: float | None = None
    """When a run out of bounds reaches `for` and fails the rollout."""


@dataclass(frozen=True, slots=True)
class AnalysisHold:
    """Why the step under analysis may not move on yet (the step machine stops here)."""

    reason: str
    """ConditionReason.ANALYSIS_RUNNING or ANALYSIS_UNAVAILABLE."""
    message: str
    wake: float | None
    """When the run in bounds reaches `for` (None: only a new answer changes it)."""


def running_analysis(ctx: PassContext, state: RolloutState, *, active: bool) -> int | None:
    """The step whose analysis runs now: the current step, while the rollout moves.

    A paused or stopped rollout runs none, so the runner forgets its answers and a
    resumed one starts a fresh run instead of failing at once on an old one.
    """
    if (not active or state.started_at is None or state.completed_at is not None
            or ctx.rollout.spec.paused or state.paused_by is not None
            or state.aborted is not None or state.rolled_back is not None):
        return None
    step = state.current_step
    return step if ctx.rollout.spec.strategy.steps[step].analysis is not None else None


def enforce_analysis(ctx: PassContext, state: RolloutState, *, active: bool) -> AnalysisVerdict:
    """Apply `failurePolicy.action` once the running analysis has been out of bounds for
    `for` since the step started."""
    step = running_analysis(ctx, state, active=active)
    if step is None:
        return AnalysisVerdict(state)
    spec = ctx.rollout.spec.strategy.steps[step].analysis
    result = ctx.analysis_results.get((ctx.name, step))
    if spec is None or result is None or result.outcome != "out_of_bounds":
        return AnalysisVerdict(state)
    began = max(result.since, state.step_started_at or result.since)
    fails_at = began + spec.for_.total_seconds()
    if ctx.now < fails_at:
        return AnalysisVerdict(state, wake=fails_at)
    action = ctx.policy.action
    state, replan_now = apply_failure_action(action, state, "analysis")
    return AnalysisVerdict(state, (PlannedEvent(
        "Warning", EventReason.ANALYSIS_FAILED,
        f"step {step + 1}/{ctx.steps} analysis failed: {_seen(spec, result)} outside "
        f"{bounds(spec)} for {format_duration(spec.for_)}: {action.value}"),), replan_now)


def analysis_hold(ctx: PassContext, state: RolloutState, step: int) -> AnalysisHold | None:
    """None when step `step` may move on as far as its analysis goes: its answer has been
    in bounds for `for` since its wave finished (`state.step_finished_at`)."""
    spec = ctx.rollout.spec.strategy.steps[step].analysis
    if spec is None:
        return None
    result = ctx.analysis_results.get((ctx.name, step))
    label = f"step {step + 1}/{ctx.steps} analysis"
    running = ConditionReason.ANALYSIS_RUNNING
    if result is None:
        return AnalysisHold(running, f"{label}: waiting for the first answer", None)
    if result.outcome == "unavailable":
        return AnalysisHold(ConditionReason.ANALYSIS_UNAVAILABLE,
                            f"{label} unavailable ({result.detail or 'no answer'}): the step "
                            "does not finish without it", None)
    if result.outcome == "out_of_bounds":
        return AnalysisHold(running, f"{label}: {_seen(spec, result)} outside "
                                     f"{bounds(spec)}", None)
    finished = state.step_finished_at if state.step_finished_at is not None else ctx.now
    passes_at = max(result.since, finished) + spec.for_.total_seconds()
    if ctx.now >= passes_at:
        return None
    return AnalysisHold(running, f"{label}: {_seen(spec, result)} inside {bounds(spec)}; "
                                 f"passes once inside for {format_duration(spec.for_)}",
                        passes_at)


def bounds(spec: PrometheusAnalysis) -> str:
    """The bounds as operators write them.

    >>> bounds(PrometheusAnalysis("http://p", "q", maximum=0.05))
    '[-inf, 0.05]'
    """
    low = "-inf" if spec.minimum is None else f"{spec.minimum:g}"
    high = "+inf" if spec.maximum is None else f"{spec.maximum:g}"
    return f"[{low}, {high}]"


def _seen(spec: PrometheusAnalysis, result: AnalysisResult) -> str:
    value = "?" if result.value is None else f"{result.value:g}"
    return f"{spec.query} = {value}"
