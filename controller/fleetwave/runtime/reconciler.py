"""The reconciler: the loop and its I/O. gather -> plan -> store -> publish.

One pass plans from memory (`FleetState`, `DesiredState`), writes everything it decided in
one store transaction (records before their commands: a controller killed at any point
re-plans the same attempt, same id and correlation id, instead of commanding a device
twice), then publishes outside the fleet lock and records `sent` in a second transaction.

It wakes on every event that can change a plan: `wake()` (ingest, source, control, check
results) and the clock (`next_wake` of the plans). The wake-up is cleared *before* a pass,
so one that arrives during the pass starts the next pass instead of waiting for the resync.
Only component groups whose inputs changed are planned again (rollouts of different
components never share a device, so a group plans the same alone as with the others).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from fleetwave.background import Background, wake_or_stop
from fleetwave.metrics import Metrics
from fleetwave.planner.model import HashCache, Plan
from fleetwave.planner.plan import plan_deleted, plan_fleet
from fleetwave.resources.model import Rollout
from fleetwave.runtime.analysis import AnalysisRunner
from fleetwave.runtime.checks import CheckRunner
from fleetwave.runtime.desired import DesiredState
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.gates import GateRunner
from fleetwave.runtime.gauges import count_final, update_gauges
from fleetwave.runtime.outbox import Outbox, Outgoing
from fleetwave.runtime.passes import PassBuilder, start_checks
from fleetwave.store import Event, Store, StoreError
from fleetwave.updates.model import Decision, UpdateRecord

log = structlog.get_logger("fleetwave.engine")


EventSink = Callable[[Mapping[str, Any]], None]
StatusSink = Callable[[str, Mapping[str, Any]], Awaitable[None]]
RolledBackHook = Callable[[Rollout, list[UpdateRecord]], Awaitable[None]]


@dataclass(frozen=True)
class ReconcileHooks:
    """What other parts of the process hear from the reconciler, given at construction."""

    on_event: EventSink | None = None
    """Every planned event (the notifier, Kubernetes Events)."""
    on_status: StatusSink | None = None
    """A rollout's status after it changed (the operator's status subresource)."""
    on_rolled_back: RolledBackHook | None = None
    """Once when a rollout becomes RolledBack (the git revert proposal)."""


class Reconciler:
    """Runs passes: on every wake-up, at the plans' next wake, and every resync interval."""

    def __init__(self, store: Store, outbox: Outbox, metrics: Metrics, fleet: FleetState,
                 desired: DesiredState, lock: asyncio.Lock, *, clock: Callable[[], float],
                 resync_interval: float, hooks: ReconcileHooks, wakeup: asyncio.Event,
                 to_clear: set[str], checks: CheckRunner | None = None) -> None:
        self.store = store
        self.outbox = outbox
        outbox.on_sent = self._store_sent
        outbox.on_room = self._room
        self.metrics = metrics
        self.fleet = fleet
        self.desired = desired
        self.lock = lock
        """Guards the fleet against ingest, control and a pass interleaving."""
        self.clock = clock
        self.resync_interval = resync_interval
        self.hooks = hooks
        self.checks = checks or CheckRunner()
        self.gates = GateRunner(self._gate_answered)
        """Step webhook gates, asked in the background; an answer replans every group."""
        self._gates_answered = False
        self.analysis = AnalysisRunner(self.wake, queries=metrics.analysis_queries, clock=clock)
        """Step analyses, queried in the background; a changed outcome replans its group."""
        self._checked_at: dict[tuple[str, str], float] = {}
        self._check_task: asyncio.Task[None] | None = None
        self._wake = wakeup
        """Set by ingest and everything else that can change a plan."""
        self._pass_lock = asyncio.Lock()
        """One pass at a time (the loop and control operations both run them)."""
        self._hashes = HashCache()
        self._group_wake: dict[str, float | None] = {}
        """component -> when the clock alone changes a plan of that group."""
        self._planned: dict[str, tuple[str, int, str, str]] = {}
        """rollout -> (component, generation, spec hash, source kind) it was planned with."""
        self._dirty_groups: set[str] = set()
        self._held_back: set[str] = set()
        """Components whose plans left devices for when the outbox has room."""
        self._last_full = 0.0
        self._gauged_at = 0.0
        self.inventory_dirty = False
        """The source's inventory changed: the store's copy is written on the next pass."""
        self.to_clear = to_clear
        """Devices whose update ended by their own status: clear their retained command."""
        self._background = Background(log, "engine.background_failed")

    def wake(self, component: str | None = None) -> None:
        """Something changed that can change a plan (of `component`'s rollouts, or any)."""
        if component is not None:
            self._dirty_groups.add(component)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile on every relevant change and whenever the clock changes the plan."""
        while not stop.is_set():
            next_wake: float | None = None
            began = time.perf_counter()
            self._wake.clear()  # before the pass: a wake-up during it starts the next one
            try:
                next_wake = await self.reconcile_once()
            except StoreError as exc:
                # one line: the store's errors say what failed and what to do; the pass is
                # retried on the next wake-up (a PostgreSQL restart pauses the loop)
                self.metrics.reconcile_errors.inc()
                log.warning("engine.reconcile_failed", error=str(exc))
            except Exception:
                self.metrics.reconcile_errors.inc()
                log.exception("engine.reconcile_failed")
            took = time.perf_counter() - began
            delay = self.resync_interval
            if next_wake is not None:
                delay = min(delay, max(0.05, next_wake - self.clock()))
            await wake_or_stop(self._wake, stop, delay)
            # Coalesce a burst of ingest into one pass, and leave the loop to ingest twice
            # as long as the last pass took (planning at most a third of the time), so it
            # does not starve the status it plans on: a pass over 100,000 devices plans on
            # the statuses of the whole pause. Bounded, so progress shows every second.
            await asyncio.sleep(min(1.0, max(0.02, 2 * took)))
        await self.analysis.close()

    async def reconcile_once(self, *, full: bool = False, wait_sent: bool = False
                             ) -> float | None:
        """One pass; `wait_sent` also waits until its commands are published (the API
        answers with their effect)."""
        if not self.desired.synced:
            # Before the first snapshot every stored rollout would look deleted: planning
            # then would cancel open updates of rollouts that are merely not read yet.
            return None
        async with self._pass_lock:
            started = time.perf_counter()
            async with self.lock:
                locked = time.perf_counter()
                outgoing, next_wake = await self._pass(full)
            self.outbox.submit(outgoing)
            took = time.perf_counter() - started
            self.metrics.reconcile_duration.observe(took)
            log.debug("engine.pass", took=round(took, 3), waited=round(locked - started, 3),
                      queued=len(self.outbox))
        if wait_sent:
            await self.outbox.flush()
        return next_wake

    async def _pass(self, full: bool) -> tuple[list[Outgoing], float | None]:
        """Plan what changed, store it in one transaction; return what to publish."""
        fleet = self.fleet
        if self.inventory_dirty:
            await self.store.devices.set_inventory_labels(fleet.inventory)
            self.inventory_dirty = False
        now = self.clock()
        desired = self.desired.with_generations()
        self._start_checks(desired, now)
        chosen = self._groups_to_plan(desired, now, full)
        rollouts = [r for r in desired.values() if r.spec.component in chosen]
        results = {key: verdict[0] for key, verdict in self.checks.results.items()}
        plans = plan_fleet(rollouts, list(fleet.devices.values()), fleet.records, fleet.states,
                           now, check_results=results, cache=self._hashes,
                           gate_results=self.gates.results(desired),
                           analysis_results=self.analysis.results(desired),
                           send_limit=self.outbox.free()).plans if rollouts else {}
        for component in chosen:
            self._group_wake[component] = None
        for rollout in rollouts:
            if plans[rollout.name].held_back:
                self._held_back.add(rollout.spec.component)
                self.outbox.want_room()
            wake = plans[rollout.name].next_wake
            held = self._group_wake.get(rollout.spec.component)
            if wake is not None and (held is None or wake < held):
                self._group_wake[rollout.spec.component] = wake
        deleted = [n for n in fleet.states if n not in desired]
        for name in deleted:
            plans[name] = plan_deleted(name, fleet.records.get(name, {}), now)
        built = PassBuilder(fleet, self.desired, now)
        for name, plan in plans.items():
            built.add(name, plan, desired.get(name))
        built.delete(deleted)
        self._ask_gates(desired, plans, now, built)
        self._follow_analyses(desired, plans, now, built)
        result = await self.store.write_pass(built.write())
        for record in [*result.created, *result.changed]:
            if fleet.remember(record):
                count_final(self.metrics, record)
        await self._after_store(built, plans, desired)
        for name in deleted:
            fleet.forget_rollout(name)
            self.desired.forget(name)
        wakes = [w for w in self._group_wake.values() if w is not None]
        if plans or now - self._gauged_at >= 0.5:
            self._gauged_at = now
            update_gauges(self.metrics, fleet, desired, now)
        else:
            # Counting 100,000 devices per pass would slow their ingest at start-up: without
            # a plan the fleet gauges follow at most half a second behind.
            wakes.append(self._gauged_at + 0.5)
        outgoing = built.outgoing()
        # ...unless another update of that device is already queued.
        outgoing += [Outgoing(d, None) for d in sorted(self.to_clear) if not fleet.open.get(d)]
        self.to_clear.clear()
        return outgoing, min(wakes) if wakes else None

    def _groups_to_plan(self, desired: Mapping[str, Rollout], now: float,
                        full: bool) -> set[str]:
        """Components whose inputs changed: records, devices, spec, a due clock, a check
        result; every group on the resync interval."""
        fleet = self.fleet
        dirty, devices_changed = fleet.take_dirty()
        groups = {r.spec.component for r in desired.values()}
        gates_answered, self._gates_answered = self._gates_answered, False
        if (full or devices_changed or gates_answered
                or now - self._last_full >= self.resync_interval):
            self._last_full = now
            self._dirty_groups.clear()
            return groups
        chosen = dirty | self._dirty_groups
        self._dirty_groups.clear()
        for name, rollout in desired.items():
            planned = (rollout.spec.component, rollout.generation, rollout.spec_hash,
                       rollout.source.kind)
            before = self._planned.get(name)
            if before != planned:
                self._planned[name] = planned
                chosen.add(rollout.spec.component)
                if before is not None:
                    chosen.add(before[0])  # the group it left plans without it
        for name in [n for n in self._planned if n not in desired]:
            chosen.add(self._planned.pop(name)[0])  # a deleted rollout frees its devices
        for component, wake in self._group_wake.items():
            if wake is not None and wake <= now:
                chosen.add(component)
        return chosen & groups

    async def _after_store(self, built: PassBuilder, plans: Mapping[str, Plan],
                           desired: Mapping[str, Rollout]) -> None:
        """The pass is committed: keep its states in memory, tell the hooks."""
        hooks = self.hooks
        for name, _status in built.rolled_back():
            rollout = desired.get(name)
            if rollout is not None and hooks.on_rolled_back is not None:
                attempts = [r for rs in self.fleet.records.get(name, {}).values() for r in rs]
                self._background.run(hooks.on_rolled_back(rollout, attempts),
                                     "rolled-back hook")
        for name, plan in plans.items():
            self.fleet.states[name] = plan.state
        for name, status in built.statuses.items():
            self.fleet.status[name] = status
        for event in built.events:
            self.emit(event.rollout, event.type, event.reason, event.message, event.device)
        if hooks.on_status is not None:
            for name in built.saved:
                await hooks.on_status(name, built.statuses[name])

    async def _store_sent(self, sent: list[tuple[str, Decision]]) -> None:
        """The outbox published these records' commands: store `sent` (one transaction)."""
        async with self.lock:
            for record in await self.store.updates.apply_decisions(sent):
                self.fleet.remember(record)

    def _room(self) -> None:
        """The outbox has room again: plan the groups that held devices back."""
        self._dirty_groups |= self._held_back
        self._held_back.clear()
        self._wake.set()

    def _gate_answered(self) -> None:
        self._gates_answered = True
        self._wake.set()

    def _ask_gates(self, desired: Mapping[str, Rollout], plans: Mapping[str, Plan],
                   now: float, built: PassBuilder) -> None:
        """Ask the webhook gates the plans wait for (in the background), and plan their
        group again when a closed one is due to be asked again; the answers that arrived
        since the last pass go into this pass's audit trail."""
        for name, plan in plans.items():
            if plan.awaiting_gate is not None and name in desired:
                rollout = desired[name]
                self.gates.ask(rollout, plan.awaiting_gate, plan.status.counts, now)
                retry = self.gates.retry_at(rollout, plan.awaiting_gate)
                held = self._group_wake.get(rollout.spec.component)
                if retry is not None and (held is None or retry < held):
                    self._group_wake[rollout.spec.component] = retry
        built.events += [Event(time=now, rollout=name, type=e.type, reason=e.reason,
                               message=e.message, device=e.device, actor="gate")
                         for name, e in self.gates.drain_events()]

    def _follow_analyses(self, desired: Mapping[str, Rollout], plans: Mapping[str, Plan],
                         now: float, built: PassBuilder) -> None:
        """Query the analyses the new plans await (plans not made again keep theirs); the
        outcomes that changed since the last pass go into this pass's audit trail."""
        for name, plan in plans.items():
            self.analysis.follow(name, desired.get(name), plan.awaiting_analysis)
        built.events += [Event(time=now, rollout=name, type=e.type, reason=e.reason,
                               message=e.message, device=e.device, actor="analysis")
                         for name, e in self.analysis.drain_events()]

    def _start_checks(self, desired: Mapping[str, Rollout], now: float) -> None:
        """HTTP and TCP checks in the background: their results reach a later pass."""
        if self._check_task is not None and not self._check_task.done():
            return
        targets = start_checks(self.fleet, desired, now, self._checked_at)
        if targets:
            async def run() -> None:
                await self.checks.run(targets)
                for target in targets:
                    self._dirty_groups.add(desired[target.rollout].spec.component)
                self._wake.set()
            self._check_task = asyncio.create_task(run(), name="health-checks")

    def emit(self, rollout: str, type: str, reason: str, message: str,
             device: str | None) -> None:
        """Tell the log and the event hook of one event (already in the audit trail)."""
        log.info("rollout.event", rollout=rollout, type=type, reason=reason, message=message,
                 device=device)
        if self.hooks.on_event is not None:
            self.hooks.on_event({"rollout": rollout, "type": type, "reason": reason,
                                 "message": message, "device": device, "time": self.clock()})
