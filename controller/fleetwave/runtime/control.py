"""The API's write side: pause, resume, abort, roll back, delete, ad-hoc updates, cancel.

Each operation writes the store first, then memory, then runs a pass so the caller sees
its effect in the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fleetwave.api.ports import Conflict, ControlOp, NotFound
from fleetwave.planner.model import RolloutState
from fleetwave.planner.plan import apply_control
from fleetwave.resources.model import SCHEDULED_TIME_ANNOTATION, Rollout
from fleetwave.runtime.desired import (
    ADHOC_PREFIX,
    DesiredState,
    api_rollout,
    rollout_name,
    stored_state,
)
from fleetwave.runtime.fleet import FleetState
from fleetwave.runtime.outbox import Outbox
from fleetwave.runtime.queries import Queries
from fleetwave.runtime.reconciler import Reconciler
from fleetwave.store import Event, Store, record_json
from fleetwave.updates.commands import CANCEL_LIFETIME, command_for
from fleetwave.updates.model import Decision, DecisionKind

RegistryHandler = Callable[[Sequence[Any]], Awaitable[list[dict[str, Any]]]]
GitSync = Callable[[], Awaitable[None]]


class Control:
    def __init__(self, store: Store, fleet: FleetState, desired: DesiredState,
                 lock: asyncio.Lock, reconciler: Reconciler, queries: Queries, outbox: Outbox,
                 *, clock: Callable[[], float], registry_handler: RegistryHandler | None = None,
                 git_sync: GitSync | None = None) -> None:
        self.store = store
        self.fleet = fleet
        self.desired = desired
        self.lock = lock
        self.reconciler = reconciler
        self.queries = queries
        self.outbox = outbox
        self.clock = clock
        self.registry_handler = registry_handler
        self.git_sync = git_sync

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> dict[str, Any]:
        rollout = self.queries.require(name)
        async with self.lock:
            state = self.fleet.states.get(name)
            if state is None:
                state = RolloutState.initial(rollout, self.clock())
            new_state, events = apply_control(state, op, self.clock(), device=device)
            self.fleet.states[name] = new_state
            now = self.clock()
            await self.store.events.append([
                Event(time=now, rollout=name, type=e.type, reason=e.reason, message=e.message,
                      device=e.device, actor=actor) for e in events])
            for e in events:
                self.reconciler.emit(name, e.type, e.reason, e.message, e.device)
            await self._save(rollout, new_state)
        self.reconciler.wake(rollout.spec.component)
        await self.reconciler.reconcile_once(wait_sent=True)
        return self.queries.rollout_json(self.queries.require(name))

    async def _save(self, rollout: Rollout, state: RolloutState) -> None:
        generation, digest = self.desired.generation_of(rollout)
        await self.store.rollouts.save(rollout.name, generation, digest,
                                      stored_state(rollout, state),
                                      self.fleet.status.get(rollout.name, {}))

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> dict[str, Any]:
        await self.control(name, "rollback", actor=actor, device=uuid)
        latest = self.fleet.latest(name, uuid)
        if latest is None:
            raise NotFound(f"device {uuid!r} has no update in rollout {name!r}")
        return record_json(latest)

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        rollout = self.queries.require(name)
        if rollout.source.kind not in ("api", "policy"):
            raise Conflict(f"rollout {name!r} comes from {rollout.source.kind}: delete it there")
        self.desired.api.pop(name, None)
        await self.store.events.append([Event(time=self.clock(), rollout=name, type="Normal",
                                              reason="Deleted", message=f"deleted by {actor}",
                                              actor=actor)])
        self.reconciler.wake(rollout.spec.component)
        await self.reconciler.reconcile_once(wait_sent=True)

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> dict[str, Any]:
        name = rollout_name(f"{ADHOC_PREFIX}{uuid}-{component}-{version}")
        spec = {"component": component, "version": version, "force": force,
                "selector": {"devices": [uuid]},
                "strategy": {"steps": [{"percent": 100}]},
                "failurePolicy": {"minSample": 1, "retries": 0}}
        annotations = {"fleetwave.io/actor": actor}
        if scheduled_time:
            annotations[SCHEDULED_TIME_ANNOTATION] = scheduled_time
        self.desired.add_api(api_rollout(
            {"name": name, "kind": "api", "spec": spec, "annotations": annotations}, 1))
        await self.store.events.append([Event(time=self.clock(), rollout=name, type="Normal",
                                              reason="Created",
                                              message=f"ad-hoc update of {uuid} to {component} "
                                                      f"{version} by {actor}", actor=actor)])
        await self.reconciler.reconcile_once(wait_sent=True)
        return self.queries.rollout_json(self.queries.require(name))

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> dict[str, Any]:
        record = self.fleet.by_id.get(update_id) or await self.store.updates.get(update_id)
        if record is None or record.device != uuid:
            raise NotFound(f"no update {update_id!r} for device {uuid!r}")
        if not record.is_open:
            raise Conflict(f"update {update_id} is already {record.state.value}")
        command = command_for(record, "cancel", self.clock(), CANCEL_LIFETIME)
        await self.outbox.publish(uuid, command)
        async with self.lock:
            changed = await self.store.updates.apply_decisions([(record.id, Decision(
                DecisionKind.CANCEL, self.clock(), reason="CancelledByUser",
                message=f"cancelled by {actor}"))])
            for r in changed:
                self.fleet.remember(r)
        await self.outbox.clear(uuid)
        self.reconciler.wake(record.component)
        return record_json(self.fleet.by_id.get(record.id, record))

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[dict[str, Any]]:
        if self.registry_handler is None:
            return [{"created": False, "reason": "no RolloutPolicy source configured"}
                    for _ in pushes]
        return await self.registry_handler(pushes)

    async def git_push(self, ref: str | None) -> None:
        if self.git_sync is not None:
            await self.git_sync()

    def add_policy_rollout(self, rollout: Rollout) -> None:
        self.desired.add_policy(rollout)
        self.reconciler.wake()
