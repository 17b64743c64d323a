"""The API's read side: rollouts, devices, updates and readiness, from memory where it
holds them and from the store for history (events, a device's past updates)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleetwave.api.ports import InvalidCursor, Key, NotFound, Page, page_after
from fleetwave.resources.model import Rollout
from fleetwave.runtime.desired import DesiredState
from fleetwave.runtime.fleet import FleetState
from fleetwave.store import Store, device_json, event_json, record_json
from fleetwave.updates.model import UpdateState


class Queries:
    def __init__(self, store: Store, fleet: FleetState, desired: DesiredState, *,
                 clock: Callable[[], float], broker_connected: Callable[[], bool],
                 started: Callable[[], bool]) -> None:
        self.store = store
        self.fleet = fleet
        self.desired = desired
        self.clock = clock
        self.broker_connected = broker_connected
        self.started = started

    def rollout_json(self, rollout: Rollout) -> dict[str, Any]:
        status = dict(self.fleet.status.get(rollout.name, {"phase": "Pending"}))
        return {
            "name": rollout.name,
            "spec": dict(rollout.raw_spec),
            "status": status,
            "source": {"kind": rollout.source.kind, "revision": rollout.source.revision,
                       "path": rollout.source.path},
            "generation": self.desired.generations.get(
                rollout.name, (rollout.generation, ""))[0],
        }

    def require(self, name: str) -> Rollout:
        rollout = self.desired.known().get(name)
        if rollout is None:
            raise NotFound(f"no rollout named {name!r}")
        return rollout

    def list_rollouts(self, phase: str | None = None) -> list[dict[str, Any]]:
        items = [self.rollout_json(r) for r in sorted(self.desired.known().values(),
                                                      key=lambda r: r.name)]
        if phase:
            items = [i for i in items if i["status"].get("phase", "").lower() == phase.lower()]
        return items

    def get_rollout(self, name: str) -> dict[str, Any] | None:
        rollout = self.desired.known().get(name)
        return self.rollout_json(rollout) if rollout is not None else None

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        self.require(name)
        state = self.fleet.states.get(name)
        parked = state.parked if state is not None else frozenset()
        records = self.fleet.records.get(name, {})
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
        self.require(name)
        # SQL offsets are 64-bit: a larger one (any client may send it) means "past the end".
        page = await self.store.events.page(name, offset=min(offset, 2**63 - 1), limit=limit)
        return [event_json(e) for e in page.items], page.total

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        uuids, next_key = page_after(self.fleet.sorted_uuids(), after, limit)
        devices = self.fleet.devices
        return Page([device_json(devices[u]) for u in uuids], next_key, len(devices))

    async def get_device(self, uuid: str) -> dict[str, Any] | None:
        row = self.fleet.devices.get(uuid)
        return device_json(row) if row is not None else None

    async def device_updates(self, uuid: str, limit: int = 100) -> list[dict[str, Any]]:
        if uuid not in self.fleet.devices:
            raise NotFound(f"no device {uuid!r}")
        return [record_json(r) for r in await self.store.updates.of_device(uuid, limit=limit)]

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        if after is not None and not (len(after) == 2 and isinstance(after[0], int | float)
                                      and isinstance(after[1], str)):
            raise InvalidCursor("cursor does not belong to this list: start again without it")
        states = [UpdateState(state)] if state else None
        records = await self.store.updates.stale(
            older_than or 0.0, self.clock(), states,
            after=(float(after[0]), after[1]) if after is not None else None, limit=limit + 1)
        page = records[:limit]
        more = len(records) > limit
        return Page([record_json(r) for r in page],
                    (page[-1].created_at, page[-1].id) if more else None)

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        reasons = {
            "store": "ok" if self.started() else "loading",
            "broker": "ok" if self.broker_connected() else "disconnected",
            "source": "ok" if self.desired.synced else "not synced yet",
        }
        return all(v == "ok" for v in reasons.values()), reasons

    def desired_versions(self) -> dict[str, set[str]]:
        """Per component, the versions Rollouts declare; never what devices report (a
        device claiming `9999.0.0` must not block every later registry push)."""
        out: dict[str, set[str]] = {}
        for rollout in self.desired.known().values():
            out.setdefault(rollout.spec.component, set()).add(rollout.spec.version)
        return out
