"""plan(desired, observed, now) -> Plan: the whole reconcile decision, as a pure function.

One rollout's pass is a pipeline of named stages over a frozen `PassContext`, in
the manner of argo-rollouts' rolloutCanary and flux's sub-reconcilers:

1. `classify.walk`: every targeted device's `Outcome` (all per-device rules live
   there, with the table of what each outcome means), plus timeouts, health
   verdicts, cancels and rollbacks it decided;
2. `tally.Tally`: status counts, failures, done and devices in flight;
3. `budget.enforce_budget`: the penalty box and the failure policy;
4. `steps.advance_steps`: start, finish, pause, approve, next step;
5. `choose.choose`: the devices to command now, lowest wave hash first, within
   maxInFlight, per-site budgets, pacing (`pacing.Pace`: maxPerMinute or the ramp)
   and windows;

and `status` turns the result into a phase, conditions and a typed status. The
engine executes the actions; a second call with the same inputs returns the same
plan (ids included), which is what makes a crash between planning and publishing
harmless.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence

from fleetwave.planner.analysis import enforce_analysis, running_analysis
from fleetwave.planner.budget import enforce_budget, failure_rate
from fleetwave.planner.choose import NOTHING, choose, take_tokens
from fleetwave.planner.classify import walk
from fleetwave.planner.conditions import EventReason
from fleetwave.planner.context import (
    LEGACY_OFFLINE_AFTER,
    TIMEZONE_LABEL,
    PassContext,
    container_checks_pass,
    is_offline,
    record_ids,
    was_failure,
)
from fleetwave.planner.downloads import NO_DOWNLOADS, plan_downloads
from fleetwave.planner.model import (
    COUNT_KEYS,
    Action,
    AnalysisResults,
    CheckResults,
    ClearCommand,
    Decide,
    DeviceView,
    FleetPlan,
    GateResults,
    HashCache,
    Plan,
    PlannedEvent,
    RolloutState,
    RolloutStatus,
    SendCancel,
)
from fleetwave.planner.pacing import pace_state
from fleetwave.planner.schedule import PassGates
from fleetwave.planner.selectors import resolve_targets
from fleetwave.planner.status import (
    OUTSIDE_EVERY_WINDOW,
    Conflicts,
    PhaseVerdict,
    phase_event,
    phase_of,
    rollout_conditions,
)
from fleetwave.planner.steps import advance_steps, start_generation
from fleetwave.planner.tally import Tally
from fleetwave.resources.model import Rollout
from fleetwave.resources.vocabulary import ControlOp, Phase
from fleetwave.updates.commands import CANCEL_LIFETIME, command_for
from fleetwave.updates.model import Decision, DecisionKind, Reason, UpdateRecord, UpdateState

__all__ = ["LEGACY_OFFLINE_AFTER", "TIMEZONE_LABEL", "apply_control", "container_checks_pass",
           "is_offline", "plan", "plan_deleted", "plan_fleet", "record_ids", "was_failure"]

_UNSTARTED = frozenset({UpdateState.PENDING, UpdateState.ACKNOWLEDGED, UpdateState.SCHEDULED})


def _earliest(now: float, *times: float | None) -> float | None:
    """The first of `times` still ahead of `now` (None: none is)."""
    ahead = [t for t in times if t is not None and t > now]
    return min(ahead) if ahead else None


def plan(rollout: Rollout, devices: Sequence[DeviceView],
         records: Mapping[str, Sequence[UpdateRecord]], state: RolloutState | None, now: float,
         *, conflicted: int = 0, overridden: int = 0, conflicts_with: Sequence[str] = (),
         check_results: CheckResults | None = None, cache: HashCache | None = None,
         all_devices: Mapping[str, DeviceView] | None = None,
         gate_results: GateResults | None = None,
         analysis_results: AnalysisResults | None = None,
         send_limit: int | None = None) -> Plan:
    """Plan one rollout over its targeted `devices` (already filtered by plan_fleet).

    `records` maps each device to its attempts for this rollout, old generations
    included; `state` is what the previous pass returned (None the first time).
    """
    strategy = rollout.spec.strategy
    state_in = state
    state, superseded = start_generation(rollout, state, now)
    ctx = PassContext.build(rollout, state, now, check_results, gate_results, analysis_results,
                            send_limit)
    cache = cache or HashCache()
    hashes = cache.wave_hashes(rollout.name, devices)
    seen = walk(ctx, devices, hashes, records, all_devices or {})
    decided = seen.decisions
    tally = Tally.of(seen.outcomes, extra_in_flight=decided.extra_in_flight,
                     conflicted=conflicted, overridden=overridden)
    limits = cache.thresholds(rollout.name, [s.percent for s in strategy.steps], hashes)
    gates = PassGates.at(rollout, now)
    budget = enforce_budget(ctx.policy, state, tally.failures, tally.terminal,
                            decided.newly_parked)
    targeted = len(devices)
    active = gates.invalid is None and targeted > 0
    analysis = enforce_analysis(ctx, budget.state, active=active)
    state = analysis.state
    stopped = state.aborted is not None or state.rolled_back is not None
    paused = rollout.spec.paused or state.paused_by is not None
    move = advance_steps(ctx, state, seen.open_through(limits, ctx.steps),
                         can_move=active and not (stopped or paused),
                         gate_open=gates.gate.open)
    state = move.state
    verdict = phase_of(rollout, state, gates.gate, gates.invalid, targeted, move.note,
                       move.detail)
    choice, window_changes = NOTHING, []
    running = (active and not stopped and not paused and gates.gate.open
               and state.started_at is not None)
    state = pace_state(strategy, state, now, running=running, halted=stopped or paused)
    if running:
        choice = choose(ctx, state, seen, limits, tally.in_flight,
                        gates.device_windows)
        if gates.device_windows is not None:
            window_changes = gates.device_windows.next_changes()
            if not gates.device_windows.any_open() and verdict.phase == Phase.PROGRESSING:
                verdict = OUTSIDE_EVERY_WINDOW
    downloads = (plan_downloads(ctx, state, seen, limits, gates) if active and not stopped
                 and not paused and state.completed_at is None else NO_DOWNLOADS)
    state = take_tokens(ctx, state, len(choice.sends))
    wake = _earliest(now, decided.wake,
                     now + 0.001 if budget.replan_now or analysis.replan_now else None,
                     move.wake, analysis.wake, choice.wake, *window_changes, *downloads.changes,
                     gates.gate.next_change if not stopped and not paused else None)
    changed = phase_event(state.phase, verdict)
    events = (*superseded, *budget.events, *analysis.events, *move.events,
              *((changed,) if changed else ()))
    conditions = rollout_conditions(
        state.conditions, verdict, state.generation, now,
        Conflicts(conflicted, overridden, conflicts_with), gates.invalid)
    state = state.evolve(phase=verdict.phase, conditions=conditions)
    settled = (state_in is not None and not events and not decided.actions
               and not choice.sends and not downloads.sends and not choice.held_back
               and state.evolve(tokens=state_in.tokens, tokens_at=state_in.tokens_at)
               == state_in
               and move.awaiting_gate is None)  # a gate's answer is input the engine
    # does not diff: a rollout waiting for one is planned every pass
    status = _status(ctx, state, verdict, tally, targeted)
    return Plan((*decided.actions, *choice.sends, *downloads.sends), state, status, events,
                wake, settled, awaiting_gate=move.awaiting_gate,
                awaiting_analysis=running_analysis(ctx, state, active=active),
                held_back=choice.held_back)


# -- the fleet ----------------------------------------------------------------------------


def _status(ctx: PassContext, state: RolloutState, verdict: PhaseVerdict, tally: Tally,
            targeted: int) -> RolloutStatus:
    """The rollout's `status` of this pass (its conditions already evolved into `state`)."""
    rollout = ctx.rollout
    return RolloutStatus(
        phase=verdict.phase, current_step=state.current_step,
        observed_generation=rollout.generation, revision=rollout.source.revision,
        targeted=targeted, counts=tally.counts,
        failure_rate=failure_rate(tally.failures, tally.terminal), done=tally.done,
        message=verdict.message, conditions=state.conditions, steps=ctx.steps,
    )


def plan_fleet(rollouts: Sequence[Rollout], devices: Sequence[DeviceView],
               records: Mapping[str, Mapping[str, Sequence[UpdateRecord]]],
               states: Mapping[str, RolloutState], now: float, *,
               check_results: CheckResults | None = None,
               cache: HashCache | None = None,
               unchanged: Mapping[str, Plan] | None = None,
               gate_results: GateResults | None = None,
               analysis_results: AnalysisResults | None = None,
               send_limit: int | None = None) -> FleetPlan:
    """Plan every rollout after resolving who may touch which device.

    Two rollouts targeting the same device and component conflict: both report
    it and neither touches the device. A rollout whose source is the API (an
    ad-hoc update) wins over the others for its device instead.

    Incremental planning: `unchanged` maps a rollout to the plan this function
    returned for it before, when none of that rollout's inputs changed since (its
    Rollout, its records, the devices it may target and their views, its check and
    analysis results) and `states` holds that plan's state. Such a plan is returned again
    without looking at a device while it is `reusable` (settled, before its
    next_wake); since conflicts tie the rollouts of one component together, a
    component is replanned whole as soon as one of its rollouts must be.
    `FleetPlan.replanned` names the rollouts actually planned.

    `send_limit` bounds each rollout's new commands in this call (`Plan.held_back` says
    when it left devices waiting).
    """
    # A pass allocates one small tuple per candidate device; with a million live
    # devices the cyclic GC would rescan the whole fleet many times over for nothing
    # (nothing here makes cycles), so it is held off for the pass.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan_fleet(rollouts, devices, records, states, now,
                           check_results=check_results, cache=cache or HashCache(),
                           unchanged=unchanged or {}, gate_results=gate_results,
                           analysis_results=analysis_results,
                           send_limit=send_limit)
    finally:
        if gc_was_enabled:
            gc.enable()


def _still_standing(rollouts: Sequence[Rollout], states: Mapping[str, RolloutState],
                    now: float, unchanged: Mapping[str, Plan]) -> dict[str, Plan]:
    """The reusable plans, by whole component (conflicts couple a component's rollouts)."""
    by_component: dict[str, list[Rollout]] = {}
    for r in rollouts:
        by_component.setdefault(r.spec.component, []).append(r)
    out: dict[str, Plan] = {}
    for group in by_component.values():
        previous = [unchanged.get(r.name) for r in group]
        if all(p is not None and p.reusable(r, states.get(r.name), now)
               for r, p in zip(group, previous, strict=True)):
            out.update((r.name, p) for r, p in zip(group, previous, strict=True)
                       if p is not None)
    return out


def _plan_fleet(rollouts: Sequence[Rollout], devices: Sequence[DeviceView],
                records: Mapping[str, Mapping[str, Sequence[UpdateRecord]]],
                states: Mapping[str, RolloutState], now: float, *,
                check_results: CheckResults | None, cache: HashCache,
                unchanged: Mapping[str, Plan],
                gate_results: GateResults | None = None,
                analysis_results: AnalysisResults | None = None,
                send_limit: int | None = None) -> FleetPlan:
    plans = _still_standing(rollouts, states, now, unchanged) if unchanged else {}
    todo = [r for r in rollouts if r.name not in plans]
    targets = resolve_targets(todo, devices) if todo else {}
    index = _LazyIndex(devices)
    for r in todo:
        t = targets[r.name]
        plans[r.name] = plan(r, t.targeted, records.get(r.name, {}), states.get(r.name), now,
                             conflicted=len(t.conflicted), overridden=len(t.overridden),
                             conflicts_with=sorted(t.conflicts_with),
                             check_results=check_results, cache=cache, all_devices=index,
                             gate_results=gate_results, analysis_results=analysis_results,
                             send_limit=send_limit)
    wakes = [p.next_wake for p in plans.values() if p.next_wake is not None]
    return FleetPlan({r.name: plans[r.name] for r in rollouts}, min(wakes) if wakes else None,
                     frozenset(r.name for r in todo))


class _LazyIndex(Mapping[str, DeviceView]):
    """uuid -> device, built only if some rollout has records of untargeted devices."""

    def __init__(self, devices: Sequence[DeviceView]) -> None:
        self._devices = devices
        self._index: dict[str, DeviceView] | None = None

    def _built(self) -> dict[str, DeviceView]:
        if self._index is None:
            self._index = {d.uuid: d for d in self._devices}
        return self._index

    def __getitem__(self, key: str) -> DeviceView:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._devices)


def plan_deleted(name: str, records: Mapping[str, Sequence[UpdateRecord]],
                 now: float) -> Plan:
    """A Rollout removed from its home: stop. Devices keep what they run.

    Open updates that have not started are cancelled and their retained
    commands cleared; an update already running is left to finish.
    """
    actions: list[Action] = []
    cancelled = 0
    for device in sorted(records):
        for r in records[device]:
            if r.state in _UNSTARTED:
                actions.append(SendCancel(r, command_for(r, "cancel", now, CANCEL_LIFETIME)))
                actions.append(Decide(r.id, Decision(DecisionKind.CANCEL, now,
                                                     Reason.ROLLOUT_DELETED)))
                actions.append(ClearCommand(r.device))
                cancelled += 1
    message = f"rollout deleted: {cancelled} update(s) not yet started were cancelled"
    state = RolloutState(generation=0, spec_hash="", version="", phase=Phase.DELETED)
    status = RolloutStatus(phase=Phase.DELETED, current_step=0, observed_generation=0,
                           revision=None, targeted=0, counts=dict.fromkeys(COUNT_KEYS, 0),
                           failure_rate=0.0, done=0, message=message, conditions=())
    events = (PlannedEvent("Normal", "RolloutDeleted", message),)
    return Plan(tuple(actions), state, status, events, None)


# -- control operations -------------------------------------------------------------------


def apply_control(state: RolloutState, op: ControlOp, now: float,
                  device: str | None = None) -> tuple[RolloutState, tuple[PlannedEvent, ...]]:
    """A user's control operation, as a pure change of state; the next pass acts on it.

    `promote` approves the next step (skipping what is left of a pause); with a
    device it releases that device from the penalty box. `rollback` with a device
    puts only that device back on its previous version.
    """
    if op == "pause":
        return state.evolve(paused_by="user"), (
            PlannedEvent("Normal", EventReason.PAUSED, "paused by a user"),)
    if op == "resume":
        floor = state.failures if state.paused_by == "failure" else state.budget_floor
        return state.evolve(paused_by=None, budget_floor=floor), (
            PlannedEvent("Normal", EventReason.RESUMED,
                         "resumed" + (f"; failure budget counts failures beyond {floor}"
                                      if state.paused_by == "failure" else "")),)
    if op == "promote":
        if device is not None:
            released = dict(state.released)
            released[device] = now
            return state.evolve(parked=state.parked - {device}, released=released), (
                PlannedEvent("Normal", EventReason.DEVICE_RELEASED,
                             f"device {device} released from the penalty box", device),)
        target = state.current_step + 1
        return state.evolve(approved_step=max(state.approved_step, target)), (
            PlannedEvent("Normal", EventReason.PROMOTED, f"step {target + 1} approved"),)
    if op == "abort":
        return state.evolve(aborted="user"), (
            PlannedEvent("Warning", EventReason.ABORTED, "aborted by a user"),)
    if device is not None:
        return state.evolve(rollback_devices=state.rollback_devices | {device}), (
            PlannedEvent("Warning", EventReason.DEVICE_ROLLBACK_REQUESTED,
                         f"device {device}: rollback to its previous version requested",
                         device),)
    return state.evolve(rolled_back="user"), (
        PlannedEvent("Warning", EventReason.ROLLBACK_REQUESTED,
                     "rollback requested by a user: every updated device goes back"),)
