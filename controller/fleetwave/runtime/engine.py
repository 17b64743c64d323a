"""The engine: gather -> plan -> execute -> persist, the only place the core meets I/O.

It keeps the fleet (devices, update records, rollout state) in memory so that
one pass over 100,000 devices is a pure function call, and writes through the
store before anything leaves the process: a record is stored before its
command is published, so a controller killed at any point re-plans the same
attempt (same id, same correlation id) instead of commanding a device twice.

`run`, `operator` and `demo` all drive this one class; the operator only
changes where desired state comes from and where status goes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from fleetwave.api.ports import ControlOp, InvalidCursor, Key, NotFound, Page, page_after
from fleetwave.metrics import REFUSAL_REASONS, Metrics, declared_version_counts
from fleetwave.planner.model import (
    ClearCommand,
    Decide,
    DeviceView,
    Plan,
    PlannedEvent,
    Republish,
    RolloutState,
    SendCancel,
    SendRollback,
    SendUpdate,
)
from fleetwave.planner.plan import apply_control, plan_deleted, plan_fleet
from fleetwave.protocol.messages import (
    Command,
    DeviceMessage,
    Online,
    ReportedState,
    Status,
    StatusType,
)
from fleetwave.protocol.new_devices import NewDeviceGate
from fleetwave.resources.generations import count_generation
from fleetwave.resources.inventory import device_labels
from fleetwave.resources.model import (
    SCHEDULED_TIME_ANNOTATION,
    Rollout,
    SourceRef,
    resource_from,
)
from fleetwave.runtime.checks import CheckRunner, CheckTarget
from fleetwave.store import DeviceRow, Event, Store, device_json, event_json, record_json
from fleetwave.updates.commands import CANCEL_LIFETIME, command_for
from fleetwave.updates.model import (
    RANK,
    Decision,
    DecisionKind,
    Health,
    UpdateRecord,
    UpdateState,
)

log = structlog.get_logger("fleetwave.engine")


class CommandPublisher(Protocol):
    """What the engine needs of the MQTT link (and what tests may replace)."""

    async def publish_command(self, device: str, command: Command) -> None: ...

    async def clear_command(self, device: str) -> None: ...


EventSink = Callable[[Mapping[str, Any]], None]
StatusSink = Callable[[str, Mapping[str, Any]], Awaitable[None]]


@dataclass
class _Desired:
    """Desired state from every home, merged: source files, the API, policies."""

    source: dict[str, Rollout]
    api: dict[str, Rollout]
    inventory: dict[str, dict[str, str]]
    revision: str | None = None
    synced: bool = False


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A command to publish after the pass (None: clear the retained command)."""

    device: str
    command: Command | None
    record_id: str | None = None
    """Set for update and rollback commands: the record that gets `sent_at`."""


def _definition(rollout: Rollout) -> dict[str, Any]:
    """What the store keeps of a Rollout that lives nowhere else (API and policy ones)."""
    return {"name": rollout.name, "kind": rollout.source.kind, "spec": dict(rollout.raw_spec),
            "annotations": dict(rollout.annotations)}


def _rollout_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return name[:253] or "rollout"


class Engine:
    """Holds the fleet in memory and reconciles it; implements the API's ControlPlane."""

    def __init__(self, store: Store, publisher: CommandPublisher, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time, resync_interval: float = 30.0,
                 on_event: EventSink | None = None, on_status: StatusSink | None = None) -> None:
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.resync_interval = resync_interval
        self.on_event = on_event
        self.on_status = on_status
        self._devices: dict[str, DeviceRow] = {}
        self._device_keys: list[str] | None = None
        """The uuids sorted, for paging; rebuilt only when a device joins."""
        self._views: dict[str, DeviceView] = {}
        self._records: dict[str, dict[str, list[UpdateRecord]]] = {}
        self._by_id: dict[str, UpdateRecord] = {}
        self._open: dict[str, set[str]] = {}
        """device -> ids of its open update records."""
        self._states: dict[str, RolloutState] = {}
        self._status: dict[str, dict[str, Any]] = {}
        self._generations: dict[str, tuple[int, str]] = {}
        self._desired = _Desired(source={}, api={}, inventory={})
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        """Guards the in-memory fleet against ingest and a pass interleaving."""
        self._pass_lock = asyncio.Lock()
        """One reconcile pass at a time (the loop and control operations both run them)."""
        self.checks = CheckRunner()
        self._checked_at: dict[tuple[str, str], float] = {}
        self._check_task: asyncio.Task[None] | None = None
        self._inventory_dirty = False
        self._to_clear: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_rolled_back: Callable[[Rollout, list[UpdateRecord]], Awaitable[None]] | None = (
            None)
        """Called once when a rollout becomes RolledBack (the git revert proposal)."""
        """Devices whose update ended by their own status: clear their retained command."""
        self._started = False
        self.new_devices: NewDeviceGate | None = None
        """Caps unknown device ids admitted per minute (`--max-new-devices-per-minute`)."""
        self._refusals_logged_at = float("-inf")
        self.broker_connected: Callable[[], bool] = lambda: True
        self.git_sync: Callable[[], Awaitable[None]] | None = None
        self.registry_handler: Callable[[Sequence[Any]], Awaitable[list[dict[str, Any]]]] | None = (
            None)

    # -- start-up -------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the store remembers: devices, records and each rollout's state.

        Under the engine lock: ingest that starts before (the link connects first) has
        written the store already and is read back here; ingest that arrives during the
        load waits, so an older read never overwrites a newer record in memory.
        """
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        for row in await self.store.list_devices():
            self._set_device(row)
        rows = await self.store.load_rollouts()
        for name, rollout_row in rows.items():
            self._generations[name] = (rollout_row.generation, rollout_row.spec_hash)
            state = dict(rollout_row.state)
            if "planner" in state:
                self._states[name] = RolloutState.from_json(state["planner"])
            if "definition" in state:
                self._desired.api[name] = self._api_rollout(state["definition"],
                                                            rollout_row.generation)
            self._status[name] = dict(rollout_row.status)
            for record in await self.store.rollout_updates(name):
                self._remember(record)
        for record in await self.store.open_updates():
            self._remember(record)
        self._started = True
        # A record stored but never published (killed between the two) is sent by the
        # planner's first pass, with its own correlation id and the full command.
        log.info("engine.started", devices=len(self._devices), rollouts=len(rows),
                 open_updates=sum(1 for r in self._by_id.values() if r.is_open),
                 unsent=sum(1 for r in self._by_id.values() if r.is_open and r.sent_at is None))

    # -- observed state ---------------------------------------------------------------

    def _set_device(self, row: DeviceRow) -> None:
        inventory = self._desired.inventory.get(row.uuid, row.inventory_labels)
        labels = device_labels(row.reported_labels, inventory)
        row = replace(row, inventory_labels=dict(inventory), labels=labels)
        if row.uuid not in self._devices:
            self._device_keys = None
        self._devices[row.uuid] = row
        self._views[row.uuid] = DeviceView(
            uuid=row.uuid, versions=row.versions, labels=labels, online=row.online,
            last_seen=row.last_seen, ip=row.ip, name=row.name, containers=row.containers,
            state_at=row.state_received_at,
        )

    def _remember(self, record: UpdateRecord) -> None:
        old = self._by_id.get(record.id)
        if old is not None and RANK[record.state] < RANK[old.state]:
            return  # a stale copy (read before a newer write): memory never moves back
        self._by_id[record.id] = record
        if record.is_open:
            self._open.setdefault(record.device, set()).add(record.id)
        else:
            ids = self._open.get(record.device)
            if ids is not None:
                ids.discard(record.id)
                if not ids:
                    del self._open[record.device]
        attempts = self._records.setdefault(record.rollout, {}).setdefault(record.device, [])
        if old is not None:
            for i, r in enumerate(attempts):
                if r.id == record.id:
                    attempts[i] = record
                    break
            else:
                attempts.append(record)
        else:
            attempts.append(record)
            attempts.sort(key=lambda r: (r.created_at, r.attempt))
        if record.is_terminal and (old is None or not old.is_terminal):
            self._count_final(record)

    def _count_final(self, record: UpdateRecord) -> None:
        if not self._started:
            return
        self.metrics.updates.labels(component=record.component, state=record.state.value).inc()
        start = record.sent_at or record.created_at
        end = record.completed_at or record.updated_at
        if end >= start:
            self.metrics.update_duration.labels(
                component=record.component, state=record.state.value).observe(end - start)

    async def on_device_messages(self, batch: Sequence[DeviceMessage]) -> None:
        """The MQTT ingest hands over batches: one store transaction per kind per batch."""
        for status in batch:
            if (isinstance(status, Status) and status.type is StatusType.FAILED
                    and status.reason in REFUSAL_REASONS):
                self.metrics.commands_refused.labels(reason=status.reason).inc()
        async with self._lock:
            batch = self._admit(batch)
            statuses = [m for m in batch if isinstance(m, Status)]
            device_msgs = [m for m in batch if isinstance(m, ReportedState | Online)]
            finished: set[str] = set()
            if statuses:  # before the reports: a status in hand settles its own update
                outcomes = await self.store.apply_statuses(statuses)
                for outcome in outcomes:
                    if outcome.after is not None:
                        self._remember(outcome.after)
                        if outcome.after.is_terminal and (
                                outcome.before is None or outcome.before.is_open):
                            finished.add(outcome.after.device)
            if device_msgs:
                # An update whose status was lost is settled by the reported version.
                for record in await self.store.apply_device_messages(device_msgs):
                    self._remember(record)
                    finished.add(record.device)
                for msg in device_msgs:
                    self._merge_device_message(msg)
            # A final state clears the retained command, so a rebooting device is not
            # updated again. The next pass publishes the clears: waiting for the broker
            # here would hold up the ingest thread that carries its acknowledgements.
            self._to_clear.update(finished)
        self._wake.set()

    async def read_back(self) -> None:
        """A leader reads back the records other replicas changed (their share of status),
        so its next pass plans on them; never the rollout states, its own are newer."""
        async with self._lock:
            held = {i for ids in self._open.values() for i in ids}
            fresh = await self.store.open_updates()
            changed = await self.store.updates_by_id(sorted(held - {r.id for r in fresh}))
            for record in [*fresh, *changed]:
                self._remember(record)
            self._to_clear.update(r.device for r in changed if r.is_terminal)

    def _admit(self, batch: Sequence[DeviceMessage]) -> Sequence[DeviceMessage]:
        """Known devices always pass; unknown ids only while `new_devices` has tokens.

        Under the engine lock, after the start-up load: a device the store knows is never
        mistaken for a new one by a resync that races the load.
        """
        gate = self.new_devices
        if gate is None:
            return batch
        before = gate.refused
        kept = gate.admit(batch, self._devices.__contains__, self.clock())
        if gate.refused > before:
            self.metrics.mqtt_dropped.labels(reason="new_device_rate").inc(gate.refused - before)
            now = self.clock()
            if now - self._refusals_logged_at >= 60.0:  # one line a minute, not per batch
                self._refusals_logged_at = now
                log.warning("mqtt.new_devices_refused", per_minute=gate.per_minute,
                            total_refused=gate.refused,
                            hint="raise --max-new-devices-per-minute if this is real churn")
        return kept

    def _merge_device_message(self, msg: ReportedState | Online) -> None:
        row = self._devices.get(msg.device)
        if row is None:
            row = DeviceRow(uuid=msg.device, versions={}, reported_labels={},
                            inventory_labels={}, labels={}, deployment_type=None, ip=None,
                            name=None, containers=(), online=None, last_seen=None,
                            state_received_at=None)
        if isinstance(msg, ReportedState):
            row = replace(row, versions=dict(msg.versions), reported_labels=dict(msg.labels),
                          deployment_type=msg.deployment_type or row.deployment_type,
                          ip=msg.ip or row.ip, name=msg.name or row.name,
                          containers=msg.containers, last_seen=msg.received_at,
                          state_received_at=msg.received_at)
        else:
            row = replace(row, online=msg.online, last_seen=max(row.last_seen or 0.0,
                                                                 msg.received_at))
        self._set_device(row)

    # -- desired state ----------------------------------------------------------------

    def set_source(self, rollouts: Mapping[str, Rollout],
                   inventory: Mapping[str, Mapping[str, str]], revision: str | None) -> None:
        """A new snapshot of the folder, git or Kubernetes source."""
        self._desired.source = dict(rollouts)
        self._desired.revision = revision
        self._desired.synced = True
        if dict(inventory) != self._desired.inventory:
            self._desired.inventory = {k: dict(v) for k, v in inventory.items()}
            self._inventory_dirty = True
            for row in list(self._devices.values()):
                self._set_device(row)
        self._wake.set()

    def _all_desired(self) -> dict[str, Rollout]:
        return {name: self._with_generation(r) for name, r in self.known_rollouts().items()}

    def _with_generation(self, rollout: Rollout) -> Rollout:
        """Outside Kubernetes a generation is counted here: +1 whenever the spec changes."""
        if rollout.source.kind == "kubernetes":
            self._generations[rollout.name] = (rollout.generation, rollout.spec_hash)
            return rollout
        generation = count_generation(self._generations.get(rollout.name), rollout.spec_hash)
        self._generations[rollout.name] = (generation, rollout.spec_hash)
        if generation == rollout.generation:
            return rollout
        return replace(rollout, generation=generation)

    def _api_rollout(self, definition: Mapping[str, Any], generation: int) -> Rollout:
        rollout = resource_from(
            {"kind": "Rollout", "spec": definition["spec"],
             "metadata": {"name": definition["name"], "generation": generation,
                          "annotations": dict(definition.get("annotations", {}))}},
            SourceRef(kind=definition.get("kind", "api")))
        assert isinstance(rollout, Rollout)
        return rollout

    # -- the loop -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile on every relevant change and whenever the clock changes the plan."""
        while not stop.is_set():
            next_wake: float | None = None
            began = time.perf_counter()
            try:
                next_wake = await self.reconcile_once()
            except Exception:
                self.metrics.reconcile_errors.inc()
                log.exception("engine.reconcile_failed")
            took = time.perf_counter() - began
            delay = self.resync_interval
            if next_wake is not None:
                delay = min(delay, max(0.05, next_wake - self.clock()))
            self._wake.clear()
            waiters = {asyncio.ensure_future(self._wake.wait()),
                       asyncio.ensure_future(stop.wait())}
            _, pending = await asyncio.wait(waiters, timeout=delay,
                                            return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            # Coalesce bursts of ingest into one pass, and leave the loop to ingest at least
            # as long as the last pass took: a 100,000-device fleet mid-rollout wakes the
            # engine with every batch, and planning must not starve the status it plans on.
            await asyncio.sleep(min(2.0, max(0.05, took)))

    async def reconcile_once(self) -> float | None:
        if not self._desired.synced:
            # Before the first snapshot every stored rollout would look deleted: planning
            # then would cancel open updates of rollouts that are merely not read yet.
            return None
        async with self._pass_lock:
            started = time.perf_counter()
            outbox: list[_Outgoing] = []
            async with self._lock:
                if self._inventory_dirty:
                    await self.store.set_inventory_labels(self._desired.inventory)
                    self._inventory_dirty = False
                now = self.clock()
                desired = self._all_desired()
                self._start_checks(desired, now)
                results = {key: verdict[0] for key, verdict in self.checks.results.items()}
                fleet = plan_fleet(list(desired.values()), list(self._views.values()),
                                   self._records, self._states, now, check_results=results)
                next_wake = fleet.next_wake
                for name, plan in fleet.plans.items():
                    outbox += await self._execute(name, plan, desired.get(name))
                for name in [n for n in self._states if n not in desired]:
                    plan = plan_deleted(name, self._records.get(name, {}), now)
                    outbox += await self._execute(name, plan, None)
                    await self.store.delete_rollout(name)
                    self._states.pop(name, None)
                    self._status.pop(name, None)
                    self._records.pop(name, None)
                    self._generations.pop(name, None)
                self._update_fleet_metrics(now)
                # ...unless another update of that device is already queued.
                outbox += [_Outgoing(d, None) for d in sorted(self._to_clear)
                           if not self._open.get(d)]
                self._to_clear.clear()
            await self._send(outbox)
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        return next_wake

    async def _send(self, outbox: Sequence[_Outgoing]) -> None:
        """Publish outside the engine lock: waiting for the broker's acknowledgements must
        never stop ingest, whose thread also carries those acknowledgements."""
        sent: list[tuple[str, Decision]] = []
        for item in outbox:
            if item.command is None:
                await self.publisher.clear_command(item.device)
                continue
            await self.publisher.publish_command(item.device, item.command)
            if item.record_id is not None:
                sent.append((item.record_id, Decision(DecisionKind.SENT, self.clock())))
        if sent:
            async with self._lock:
                for record in await self.store.apply_decisions(sent):
                    self._remember(record)

    def _start_checks(self, desired: Mapping[str, Rollout], now: float,
                      every: float = 5.0) -> None:
        """HTTP and TCP checks of devices that succeeded and are not judged yet, in the
        background: their results reach the planner on a later pass."""
        if self._check_task is not None and not self._check_task.done():
            return
        targets: list[CheckTarget] = []
        for name, rollout in desired.items():
            checks = tuple(c for c in rollout.spec.health.checks if c.type in ("http", "tcp"))
            if not checks:
                continue
            for device, attempts in self._records.get(name, {}).items():
                latest = attempts[-1]
                key = (name, device)
                if (latest.action != "update" or latest.state != UpdateState.SUCCEEDED
                        or latest.health != Health.UNKNOWN
                        or now - self._checked_at.get(key, 0.0) < every):
                    continue
                self._checked_at[key] = now
                view = self._views.get(device)
                targets.append(CheckTarget(name, device, view.ip if view else None,
                                           view.name if view else None, checks))
        if targets:
            async def run() -> None:
                await self.checks.run(targets)
                self._wake.set()
            self._check_task = asyncio.create_task(run(), name="health-checks")

    async def _execute(self, name: str, plan: Plan, rollout: Rollout | None
                       ) -> list[_Outgoing]:
        """Store what the plan decided (records first) and return what to publish."""
        new_records = [a.record for a in plan.actions if isinstance(a, SendUpdate | SendRollback)]
        if new_records:
            created = await self.store.create_updates(new_records)
            for record in created:
                self._remember(record)
        decisions: list[tuple[str, Decision]] = []
        outbox: list[_Outgoing] = []
        for action in plan.actions:
            if isinstance(action, SendUpdate | SendRollback | Republish):
                known = self._by_id.get(action.record.id)
                if known is None or not known.is_open:
                    continue  # lost a race with another replica, or already done
                # The store may have raised the release above one it already holds.
                command = replace(action.command, release=known.release)
                outbox.append(_Outgoing(known.device, command, known.id))
            elif isinstance(action, SendCancel):
                outbox.append(_Outgoing(action.record.device, action.command))
            elif isinstance(action, Decide):
                decisions.append((action.record_id, action.decision))
            elif isinstance(action, ClearCommand):
                outbox.append(_Outgoing(action.device, None))
        if decisions:
            for record in await self.store.apply_decisions(decisions):
                self._remember(record)
        await self._persist(name, plan, rollout)
        return outbox

    async def _persist(self, name: str, plan: Plan, rollout: Rollout | None) -> None:
        status = plan.status.to_dict()
        if rollout is not None:
            status["revision"] = rollout.source.revision
            status["observedGeneration"] = rollout.generation
        changed_state = self._states.get(name) != plan.state
        changed_status = self._status.get(name) != status
        was = self._status.get(name, {}).get("phase")
        if (rollout is not None and was != "RolledBack" and status.get("phase") == "RolledBack"
                and self.on_rolled_back is not None):
            attempts = [r for rs in self._records.get(name, {}).values() for r in rs]
            self._background(self.on_rolled_back(rollout, attempts), "rolled-back hook")
        self._states[name] = plan.state
        self._status[name] = status
        await self._record_events(name, plan.events, "controller")
        if rollout is not None and (changed_state or changed_status or plan.events):
            await self._save(rollout, plan.state, status)
            if self.on_status is not None:
                await self.on_status(name, status)

    async def _record_events(self, name: str, events: Sequence[PlannedEvent],
                             actor: str) -> None:
        """Append to the audit trail, then tell the log and the notifier."""
        if not events:
            return
        now = self.clock()
        await self.store.append_events([
            Event(time=now, rollout=name, type=e.type, reason=e.reason, message=e.message,
                  device=e.device, actor=actor) for e in events])
        for e in events:
            self._emit(name, e)

    async def _save(self, rollout: Rollout, state: RolloutState,
                    status: Mapping[str, Any]) -> None:
        """Persist the planner's state (and the definition of an API or policy rollout,
        which lives nowhere else) beside its status."""
        generation, digest = self._generations.get(rollout.name, (rollout.generation,
                                                                  rollout.spec_hash))
        doc: dict[str, Any] = {"planner": state.to_json()}
        if rollout.source.kind in ("api", "policy"):
            doc["definition"] = _definition(rollout)
        await self.store.save_rollout(rollout.name, generation, digest, doc, status)

    def _background(self, work: Awaitable[None], what: str) -> None:
        """Run `work` beside the loop; a failure is logged, never raised into a pass."""
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("engine.background_failed", what=what)
        task = asyncio.create_task(guarded(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, rollout: str, event: PlannedEvent) -> None:
        log.info("rollout.event", rollout=rollout, type=event.type, reason=event.reason,
                 message=event.message, device=event.device)
        if self.on_event is not None:
            self.on_event({"rollout": rollout, "type": event.type, "reason": event.reason,
                           "message": event.message, "device": event.device,
                           "time": self.clock()})

    def _update_fleet_metrics(self, now: float) -> None:
        m = self.metrics
        declared: dict[str, set[str]] = {}
        for declaring in self.known_rollouts().values():
            declared.setdefault(declaring.spec.component, set()).add(declaring.spec.version)
        versions = declared_version_counts((row.versions for row in self._devices.values()),
                                           declared)
        online = sum(1 for row in self._devices.values() if row.online)
        m.devices.clear()
        for (component, version), count in versions.items():
            m.devices.labels(component=component, version=version).set(count)
        m.devices_online.set(online)
        for gauge in (m.rollout_phase, m.rollout_devices, m.rollout_step, m.rollout_targeted,
                      m.rollout_failure_ratio, m.rollout_progress):
            gauge.clear()
        for name, status in self._status.items():
            phase = status.get("phase", "Pending")
            m.rollout_phase.labels(rollout=name, phase=phase).set(1)
            m.rollout_step.labels(rollout=name).set(status.get("currentStep", 0))
            targeted = int(status.get("targeted", 0))
            m.rollout_targeted.labels(rollout=name).set(targeted)
            counts: Mapping[str, int] = status.get("counts", {})
            for state, count in counts.items():
                m.rollout_devices.labels(rollout=name, state=state).set(count)
            m.rollout_failure_ratio.labels(rollout=name).set(
                float(status.get("failureRate", 0.0)) / 100.0)
            done = int(status.get("done", 0))
            m.rollout_progress.labels(rollout=name).set(done / targeted if targeted else 0.0)
        # Stale: open for longer than its rollout's ack and update timeouts together, which
        # the planner should never allow: the alert rule for stuck updates reads this.
        known = self.known_rollouts()
        stale = 0
        for ids in self._open.values():
            for record_id in ids:
                record = self._by_id[record_id]
                rollout = known.get(record.rollout)
                limit = 3600.0 if rollout is None else (
                    rollout.spec.health.ack_timeout + rollout.spec.health.update_timeout
                ).total_seconds()
                if now - record.created_at > limit:
                    stale += 1
        m.stale_updates.set(stale)

    # -- ControlPlane: reads --------------------------------------------------------------

    def _rollout_json(self, rollout: Rollout) -> dict[str, Any]:
        status = dict(self._status.get(rollout.name, {"phase": "Pending"}))
        return {
            "name": rollout.name,
            "spec": dict(rollout.raw_spec),
            "status": status,
            "source": {"kind": rollout.source.kind, "revision": rollout.source.revision,
                       "path": rollout.source.path},
            "generation": self._generations.get(rollout.name, (rollout.generation, ""))[0],
        }

    def list_rollouts(self, phase: str | None = None) -> list[dict[str, Any]]:
        items = [self._rollout_json(r) for r in sorted(self.known_rollouts().values(),
                                                       key=lambda r: r.name)]
        if phase:
            items = [i for i in items if i["status"].get("phase", "").lower() == phase.lower()]
        return items

    def known_rollouts(self) -> dict[str, Rollout]:
        """Every Rollout the engine runs, whatever its home (a source file wins a name)."""
        merged = dict(self._desired.source)
        for name, rollout in self._desired.api.items():
            merged.setdefault(name, rollout)
        return merged

    def get_rollout(self, name: str) -> dict[str, Any] | None:
        rollout = self.known_rollouts().get(name)
        return self._rollout_json(rollout) if rollout is not None else None

    def _require(self, name: str) -> Rollout:
        rollout = self.known_rollouts().get(name)
        if rollout is None:
            raise NotFound(f"no rollout named {name!r}")
        return rollout

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        self._require(name)
        state = self._states.get(name)
        parked = state.parked if state is not None else frozenset()
        records = self._records.get(name, {})
        uuids, next_key = page_after(sorted(records), after, limit)
        out = []
        for device in uuids:
            latest = records[device][-1]
            out.append({"uuid": device, "state": latest.state.value, "attempt": latest.attempt,
                        "parked": device in parked,
                        "fromVersion": latest.from_version, "toVersion": latest.to_version,
                        "health": latest.health.value, "reason": latest.reason,
                        "updateId": latest.id})
        return Page(out, next_key, len(records))

    async def rollout_events(self, name: str, offset: int, limit: int
                             ) -> tuple[list[dict[str, Any]], int]:
        self._require(name)
        # SQL offsets are 64-bit: a larger one (any client may send it) means "past the end".
        page = await self.store.list_events(name, offset=min(offset, 2**63 - 1), limit=limit)
        return [event_json(e) for e in page.items], page.total

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        if self._device_keys is None:
            self._device_keys = sorted(self._devices)
        uuids, next_key = page_after(self._device_keys, after, limit)
        return Page([device_json(self._devices[u]) for u in uuids], next_key,
                    len(self._devices))

    async def get_device(self, uuid: str) -> dict[str, Any] | None:
        row = self._devices.get(uuid)
        return device_json(row) if row is not None else None

    async def device_updates(self, uuid: str, limit: int = 100) -> list[dict[str, Any]]:
        if uuid not in self._devices:
            raise NotFound(f"no device {uuid!r}")
        return [record_json(r) for r in await self.store.device_history(uuid, limit=limit)]

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        if after is not None and not (len(after) == 2 and isinstance(after[0], int | float)
                                      and isinstance(after[1], str)):
            raise InvalidCursor("cursor does not belong to this list: start again without it")
        states = [UpdateState(state)] if state else None
        records = await self.store.stale_updates(
            older_than or 0.0, self.clock(), states,
            after=(float(after[0]), after[1]) if after is not None else None, limit=limit + 1)
        page = records[:limit]
        more = len(records) > limit
        return Page([record_json(r) for r in page],
                    (page[-1].created_at, page[-1].id) if more else None)

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        reasons = {
            "store": "ok" if self._started else "loading",
            "broker": "ok" if self.broker_connected() else "disconnected",
            "source": "ok" if self._desired.synced else "not synced yet",
        }
        return all(v == "ok" for v in reasons.values()), reasons

    # -- ControlPlane: writes ---------------------------------------------------------------

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> dict[str, Any]:
        rollout = self._require(name)
        async with self._lock:
            state = self._states.get(name)
            if state is None:
                state = RolloutState.initial(rollout, self.clock())
            new_state, events = apply_control(state, op, self.clock(), device=device)
            self._states[name] = new_state
            await self._record_events(name, events, actor)
            await self._save(rollout, new_state, self._status.get(name, {}))
        self._wake.set()
        await self.reconcile_once()
        return self._rollout_json(self._require(name))

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> dict[str, Any]:
        await self.control(name, "rollback", actor=actor, device=uuid)
        attempts = self._records.get(name, {}).get(uuid, [])
        if not attempts:
            raise NotFound(f"device {uuid!r} has no update in rollout {name!r}")
        return record_json(attempts[-1])

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        rollout = self._require(name)
        if rollout.source.kind not in ("api", "policy"):
            from fleetwave.api.ports import Conflict
            raise Conflict(f"rollout {name!r} comes from {rollout.source.kind}: delete it there")
        self._desired.api.pop(name, None)
        await self.store.append_events([Event(time=self.clock(), rollout=name, type="Normal",
                                              reason="Deleted", message=f"deleted by {actor}",
                                              actor=actor)])
        self._wake.set()
        await self.reconcile_once()

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> dict[str, Any]:
        name = _rollout_name(f"adhoc-{uuid}-{component}-{version}")
        spec = {"component": component, "version": version, "force": force,
                "selector": {"devices": [uuid]},
                "strategy": {"steps": [{"percent": 100}]},
                "failurePolicy": {"minSample": 1, "retries": 0}}
        annotations = {"fleetwave.io/actor": actor}
        if scheduled_time:
            annotations[SCHEDULED_TIME_ANNOTATION] = scheduled_time
        # A newer ad-hoc update of the same device and component replaces the older one
        # (two API rollouts on one device would conflict and neither would act).
        for other, existing in list(self._desired.api.items()):
            if (other != name and existing.source.kind == "api"
                    and existing.spec.component == component
                    and existing.spec.selector.devices == (uuid,)):
                del self._desired.api[other]
        self._desired.api[name] = self._api_rollout(
            {"name": name, "kind": "api", "spec": spec, "annotations": annotations}, 1)
        await self.store.append_events([Event(time=self.clock(), rollout=name, type="Normal",
                                              reason="Created",
                                              message=f"ad-hoc update of {uuid} to {component} "
                                                      f"{version} by {actor}", actor=actor)])
        self._wake.set()
        await self.reconcile_once()
        return self._rollout_json(self._require(name))

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> dict[str, Any]:
        found = self._by_id.get(update_id) or await self.store.get_update(update_id)
        if found is None or found.device != uuid:
            raise NotFound(f"no update {update_id!r} for device {uuid!r}")
        record = found
        if record is None or record.device != uuid:
            raise NotFound(f"no update {update_id!r} for device {uuid!r}")
        if not record.is_open:
            from fleetwave.api.ports import Conflict
            raise Conflict(f"update {update_id} is already {record.state.value}")
        command = command_for(record, "cancel", self.clock(), CANCEL_LIFETIME)
        await self.publisher.publish_command(uuid, command)
        changed = await self.store.apply_decisions([(record.id, Decision(
            DecisionKind.CANCEL, self.clock(), reason="CancelledByUser",
            message=f"cancelled by {actor}"))])
        for r in changed:
            self._remember(r)
        await self.publisher.clear_command(uuid)
        self._wake.set()
        return record_json(self._by_id.get(record.id, record))

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[dict[str, Any]]:
        if self.registry_handler is None:
            return [{"created": False, "reason": "no RolloutPolicy source configured"}
                    for _ in pushes]
        return await self.registry_handler(pushes)

    async def git_push(self, ref: str | None) -> None:
        if self.git_sync is not None:
            await self.git_sync()

    def add_policy_rollout(self, rollout: Rollout) -> None:
        """A Rollout generated by a RolloutPolicy (kept in the store, `source.kind: policy`)."""
        self._desired.api[rollout.name] = replace(rollout, source=SourceRef(kind="policy"))
        self._wake.set()

    def desired_versions(self) -> dict[str, set[str]]:
        """Per component, the versions Rollouts declare; never what devices report (a
        device claiming `9999.0.0` must not block every later registry push)."""
        out: dict[str, set[str]] = {}
        for rollout in self.known_rollouts().values():
            out.setdefault(rollout.spec.component, set()).add(rollout.spec.version)
        return out



