"""The engine: one object over its parts, for the API's ControlPlane and the process wiring.

    fleet.py       the fleet in memory (devices, records, rollout states), one merge rule
    desired.py     desired state from every home, and generations
    ingest.py      device messages -> store -> memory (statuses acknowledged after the commit)
    writeback.py   state and liveness reports -> store, behind memory (the broker retains them)
    reconciler.py  the loop: plan -> store (one transaction) -> publish (outbox.py)
    queries.py     the API's read side
    control.py     the API's write side

Everything a part needs from the rest of the process (the publisher, hooks) is given to a
constructor. `Observed` (fleet, lock, ingest) is built first, so the MQTT link can be given
the ingest before the engine is given the link: no cycle. `run`, `operator` and `demo` all
drive this one class; the operator only changes where desired state comes from and where
status goes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from fleetwave.api.ports import ControlOp, Key, Page
from fleetwave.metrics import Metrics
from fleetwave.planner.model import RolloutState
from fleetwave.protocol.messages import DeviceMessage
from fleetwave.protocol.new_devices import NewDeviceGate
from fleetwave.resources.model import Rollout
from fleetwave.runtime.checks import CheckRunner
from fleetwave.runtime.control import Control, GitSync, RegistryHandler
from fleetwave.runtime.desired import DesiredState, api_rollout
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.gauges import count_final
from fleetwave.runtime.ingest import Ingest
from fleetwave.runtime.outbox import CommandPublisher, Outbox
from fleetwave.runtime.queries import Queries
from fleetwave.runtime.reconciler import (
    EventSink,
    ReconcileHooks,
    Reconciler,
    RolledBackHook,
    StatusSink,
)
from fleetwave.store import Store

__all__ = ["CommandPublisher", "Engine", "EngineHooks", "Observed"]

log = structlog.get_logger("fleetwave.engine")


class Observed:
    """Observed state and its writer: the fleet, the lock guarding it, and the ingest."""

    def __init__(self, store: Store, metrics: Metrics, *,
                 new_devices: NewDeviceGate | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.fleet = FleetState()
        self.lock = asyncio.Lock()
        self.to_clear: set[str] = set()
        self.wakeup = asyncio.Event()
        self.ingest = Ingest(store, self.fleet, metrics, self.lock, wake=self.wakeup.set,
                             to_clear=self.to_clear, new_devices=new_devices, clock=clock)

    async def on_device_messages(self, batch: Sequence[DeviceMessage]) -> None:
        await self.ingest.on_device_messages(batch)


@dataclass(frozen=True)
class EngineHooks:
    """What the engine calls in the rest of the process."""

    on_event: EventSink | None = None
    on_status: StatusSink | None = None
    on_rolled_back: RolledBackHook | None = None
    broker_connected: Callable[[], bool] = lambda: True
    git_sync: GitSync | None = None
    registry_handler: Callable[[Engine], RegistryHandler] | None = None
    """Built from the engine itself (it reads desired versions and adds policy rollouts)."""


class Engine:
    """Holds the fleet in memory and reconciles it; implements the API's ControlPlane."""

    def __init__(self, store: Store, publisher: CommandPublisher, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time, resync_interval: float = 30.0,
                 hooks: EngineHooks | None = None, observed: Observed | None = None,
                 checks: CheckRunner | None = None) -> None:
        hooks = hooks or EngineHooks()
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.observed = observed or Observed(store, metrics)
        self.fleet = self.observed.fleet
        self.desired = DesiredState()
        self.outbox = Outbox(publisher, clock=clock)
        self._started = False
        self.reconciler = Reconciler(
            store, self.outbox, metrics, self.fleet, self.desired, self.observed.lock,
            clock=clock, resync_interval=resync_interval, wakeup=self.observed.wakeup,
            to_clear=self.observed.to_clear, checks=checks,
            hooks=ReconcileHooks(on_event=hooks.on_event, on_status=hooks.on_status,
                                 on_rolled_back=hooks.on_rolled_back))
        self.queries = Queries(store, self.fleet, self.desired, clock=clock,
                               broker_connected=hooks.broker_connected,
                               started=lambda: self._started)
        self.control_side = Control(store, self.fleet, self.desired, self.observed.lock,
                                    self.reconciler, self.queries, self.outbox, clock=clock,
                                    git_sync=hooks.git_sync)
        if hooks.registry_handler is not None:
            self.control_side.registry_handler = hooks.registry_handler(self)

    # -- hooks the operator sets on the engine it is given -------------------------------

    @property
    def on_status(self) -> StatusSink | None:
        return self.reconciler.hooks.on_status

    @on_status.setter
    def on_status(self, sink: StatusSink | None) -> None:
        self.reconciler.hooks = ReconcileHooks(self.reconciler.hooks.on_event, sink,
                                               self.reconciler.hooks.on_rolled_back)

    @property
    def on_event(self) -> EventSink | None:
        return self.reconciler.hooks.on_event

    @on_event.setter
    def on_event(self, sink: EventSink | None) -> None:
        self.reconciler.hooks = ReconcileHooks(sink, self.reconciler.hooks.on_status,
                                               self.reconciler.hooks.on_rolled_back)

    # -- start-up -------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the store remembers: devices, records and each rollout's state.

        Under the fleet lock: reports ingested before (the link connects first) are
        written to the store first and read back here, so the load never replaces a newer
        report in memory with an older row; ingest that arrives during the load waits, and
        the merge rule keeps the newer of two copies either way.
        """
        async with self.observed.lock:
            await self.observed.ingest.reports.write_locked()
            await self._load()

    async def _load(self) -> None:
        fleet = self.fleet
        for row in await self.store.devices.all():
            fleet.put_device(row)
        rows = await self.store.rollouts.load()
        for name, rollout_row in rows.items():
            self.desired.generations[name] = (rollout_row.generation, rollout_row.spec_hash)
            state = dict(rollout_row.state)
            if "planner" in state:
                fleet.states[name] = RolloutState.from_json(state["planner"])
            if "definition" in state:
                self.desired.api[name] = api_rollout(state["definition"],
                                                     rollout_row.generation)
            fleet.status[name] = dict(rollout_row.status)
            for record in await self.store.updates.of_rollout(name):
                fleet.remember(record)
        for record in await self.store.updates.open():
            fleet.remember(record)
        self._started = True
        self.observed.ingest.counting = True
        # A record stored but never published (killed between the two) is sent by the
        # planner's first pass, with its own correlation id and the full command.
        log.info("engine.started", devices=len(fleet.devices), rollouts=len(rows),
                 open_updates=sum(1 for r in fleet.by_id.values() if r.is_open),
                 unsent=sum(1 for r in fleet.by_id.values() if r.is_open and r.sent_at is None))

    async def read_back(self) -> None:
        """A leader reads back the records other replicas changed (their share of status),
        so its next pass plans on them; never the rollout states: its own are newer."""
        fleet = self.fleet
        async with self.observed.lock:
            held = {i for ids in fleet.open.values() for i in ids}
            fresh = await self.store.updates.open()
            changed = await self.store.updates.by_ids(sorted(held - {r.id for r in fresh}))
            for record in [*fresh, *changed]:
                if fleet.remember(record):
                    count_final(self.metrics, record)
            self.observed.to_clear.update(r.device for r in changed if r.is_terminal)

    # -- observed and desired state ----------------------------------------------------

    async def on_device_messages(self, batch: Sequence[DeviceMessage]) -> None:
        """The MQTT ingest hands over batches: one store transaction per kind per batch."""
        await self.observed.on_device_messages(batch)

    def set_source(self, rollouts: Mapping[str, Rollout],
                   inventory: Mapping[str, Mapping[str, str]], revision: str | None) -> None:
        """A new snapshot of the folder, git or Kubernetes source."""
        self.desired.set_source(rollouts, revision)
        if self.fleet.set_inventory(inventory):
            self.reconciler.inventory_dirty = True
        self.reconciler.wake()

    def known_rollouts(self) -> dict[str, Rollout]:
        return self.desired.known()

    def desired_versions(self) -> dict[str, set[str]]:
        return self.queries.desired_versions()

    def add_policy_rollout(self, rollout: Rollout) -> None:
        self.control_side.add_policy_rollout(rollout)

    # -- the loop -------------------------------------------------------------------

    def wake(self) -> None:
        self.reconciler.wake()

    async def run(self, stop: asyncio.Event) -> None:
        await self.reconciler.run(stop)

    async def reconcile_once(self) -> float | None:
        """A full pass, returning once its commands are published."""
        return await self.reconciler.reconcile_once(full=True, wait_sent=True)

    # -- ControlPlane: reads --------------------------------------------------------------

    def list_rollouts(self, phase: str | None = None) -> list[dict[str, Any]]:
        return self.queries.list_rollouts(phase)

    def get_rollout(self, name: str) -> dict[str, Any] | None:
        return self.queries.get_rollout(name)

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        return await self.queries.rollout_devices(name, after, limit)

    async def rollout_events(self, name: str, offset: int, limit: int
                             ) -> tuple[list[dict[str, Any]], int]:
        return await self.queries.rollout_events(name, offset, limit)

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        return await self.queries.list_devices(after, limit)

    async def get_device(self, uuid: str) -> dict[str, Any] | None:
        return await self.queries.get_device(uuid)

    async def device_updates(self, uuid: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self.queries.device_updates(uuid, limit)

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        return await self.queries.list_updates(state, older_than, after, limit)

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        return self.queries.readiness()

    # -- ControlPlane: writes ---------------------------------------------------------------

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> dict[str, Any]:
        return await self.control_side.control(name, op, actor=actor, device=device)

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> dict[str, Any]:
        return await self.control_side.rollback_device(name, uuid, actor=actor)

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        await self.control_side.delete_rollout(name, actor=actor)

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> dict[str, Any]:
        return await self.control_side.ad_hoc_update(
            uuid, component, version, force=force, scheduled_time=scheduled_time, actor=actor)

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> dict[str, Any]:
        return await self.control_side.cancel_update(uuid, update_id, actor=actor)

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[dict[str, Any]]:
        return await self.control_side.registry_pushes(pushes)

    async def git_push(self, ref: str | None) -> None:
        await self.control_side.git_push(ref)

