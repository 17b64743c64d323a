"""An in-memory `ControlPlane` that stands in for the engine in the API and CLI tests.

It exists so the HTTP edge can be tested before the real engine lands; it
follows the contract of `fleetwave.api.ports` (NotFound, Conflict, field
names) and records every call so tests can assert what reached the engine.
The engine's own integration tests run the API against the real thing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fleetwave.api.ports import JSON, Conflict, ControlOp, Key, NotFound, Page, page_after
from fleetwave.resources.vocabulary import TERMINAL_PHASES as TERMINAL


def make_rollout(name: str, *, phase: str = "Progressing", step: int = 1, steps: int = 4,
                 version: str = "1.0.6", targeted: int = 100, succeeded: int = 30,
                 failed: int = 2, kind: str = "folder") -> JSON:
    return {
        "name": name,
        "spec": {"component": "agent", "version": version,
                 "strategy": {"steps": [{"percent": p} for p in (5, 25, 50, 100)[:steps]]}},
        "status": {"phase": phase, "currentStep": step, "observedGeneration": 1,
                   "revision": "abc123", "targeted": targeted,
                   "done": succeeded, "progress": f"{succeeded}/{targeted}",
                   "counts": {"succeeded": succeeded, "failed": failed, "pending": 3},
                   "failureRate": round(100 * failed / max(1, succeeded + failed), 1),
                   "conditions": [{"type": "Progressing", "status": "True",
                                   "reason": "StepStarted",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        "source": {"kind": kind, "revision": "abc123", "path": f"{name}.yaml"},
    }


class FakeControl:
    """Rollouts, devices and records in dicts; `calls` lists (method, args) in order."""

    def __init__(self) -> None:
        self.rollouts: dict[str, JSON] = {
            "agent-1-0-6": make_rollout("agent-1-0-6"),
            "nodered-3-1": make_rollout("nodered-3-1", phase="Completed", step=3,
                                        succeeded=100, failed=0),
        }
        self.devices: dict[str, JSON] = {
            f"dev-{i}": {"uuid": f"dev-{i}", "online": i != 2,
                         "versions": {"agent": "1.0.5"}, "labels": {"device_type": "rpi4"},
                         "lastSeen": "2026-01-01T00:00:00Z"}
            for i in range(3)
        }
        self.updates: dict[str, list[JSON]] = {
            "dev-0": [{"id": "u1", "device": "dev-0", "rollout": "agent-1-0-6",
                       "component": "agent", "fromVersion": "1.0.5", "toVersion": "1.0.6",
                       "state": "pending", "attempt": 1, "correlationId": "c1",
                       "reason": None, "error": None, "exitCode": None,
                       "triggeredBy": "controller", "createdAt": "2026-01-01T00:00:00Z"}],
            "dev-1": [], "dev-2": [],
        }
        self.events: dict[str, list[JSON]] = {
            name: [{"seq": i, "type": "StepStarted", "rollout": name} for i in range(25)]
            for name in self.rollouts
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ready: tuple[bool, dict[str, str]] = (True, {"store": "ok", "broker": "ok"})
        self.phase_script: list[str] = []
        """Phases `get_rollout`/`list_rollouts` move agent-1-0-6 through, one per read."""

    def _advance(self) -> None:
        if self.phase_script:
            self.rollouts["agent-1-0-6"]["status"]["phase"] = self.phase_script.pop(0)

    def _rollout(self, name: str) -> JSON:
        if name not in self.rollouts:
            raise NotFound(f"no rollout named {name}")
        return self.rollouts[name]

    def list_rollouts(self, phase: str | None = None) -> list[JSON]:
        self._advance()
        return [copy.deepcopy(r) for r in self.rollouts.values()
                if phase is None or r["status"]["phase"] == phase]

    def get_rollout(self, name: str) -> JSON | None:
        self._advance()
        r = self.rollouts.get(name)
        return copy.deepcopy(r) if r is not None else None

    async def rollout_devices(self, name: str, after: Key | None = None,
                              limit: int = 100) -> Page:
        self._rollout(name)
        uuids, next_key = page_after(sorted(self.devices), after, limit)
        return Page([{"uuid": u, "step": 0, "state": "pending", "attempt": 1,
                      "version": "1.0.5", "reason": None} for u in uuids], next_key,
                    len(self.devices))

    async def rollout_events(self, name: str, offset: int, limit: int) -> tuple[list[JSON], int]:
        self._rollout(name)
        events = self.events.get(name, [])
        return events[offset:offset + limit], len(events)

    async def control(self, name: str, op: ControlOp, *, actor: str,
                      device: str | None = None) -> JSON:
        rollout = self._rollout(name)
        self.calls.append(("control", {"name": name, "op": op, "actor": actor,
                                       "device": device}))
        phase = rollout["status"]["phase"]
        if op == "resume" and phase != "Paused":
            raise Conflict(f"rollout {name} is not paused (it is {phase})")
        if phase in TERMINAL and op != "rollback":
            raise Conflict(f"rollout {name} is {phase}")
        rollout["status"]["phase"] = {"pause": "Paused", "resume": "Progressing",
                                      "promote": "Progressing", "abort": "Aborted",
                                      "rollback": "RolledBack"}[op]
        return copy.deepcopy(rollout)

    async def rollback_device(self, name: str, uuid: str, *, actor: str) -> JSON:
        self._rollout(name)
        if uuid not in self.devices:
            raise NotFound(f"no device {uuid} in rollout {name}")
        self.calls.append(("rollback_device", {"name": name, "uuid": uuid, "actor": actor}))
        return {"id": "rb1", "device": uuid, "rollout": name, "state": "pending",
                "toVersion": "1.0.5"}

    async def delete_rollout(self, name: str, *, actor: str) -> None:
        rollout = self._rollout(name)
        if rollout["source"]["kind"] not in ("api", "policy"):
            raise Conflict(f"rollout {name} comes from {rollout['source']['kind']}: "
                           "delete it there")
        self.calls.append(("delete_rollout", {"name": name, "actor": actor}))
        del self.rollouts[name]

    async def list_devices(self, after: Key | None = None, limit: int = 100) -> Page:
        uuids, next_key = page_after(sorted(self.devices), after, limit)
        return Page([copy.deepcopy(self.devices[u]) for u in uuids], next_key,
                    len(self.devices))

    async def get_device(self, uuid: str) -> JSON | None:
        d = self.devices.get(uuid)
        return copy.deepcopy(d) if d is not None else None

    async def device_updates(self, uuid: str, limit: int = 100) -> list[JSON]:
        if uuid not in self.devices:
            raise NotFound(f"no device {uuid}")
        return self.updates[uuid][:limit]

    async def ad_hoc_update(self, uuid: str, component: str, version: str, *, force: bool,
                            scheduled_time: str | None, actor: str) -> JSON:
        if uuid not in self.devices:
            raise NotFound(f"no device {uuid}")
        name = f"{uuid}-{component}-{version}".lower().replace(".", "-").replace("_", "-")
        self.calls.append(("ad_hoc_update", {"uuid": uuid, "component": component,
                                             "version": version, "force": force,
                                             "scheduled_time": scheduled_time,
                                             "actor": actor}))
        rollout = make_rollout(name, phase="Pending", step=0, version=version, targeted=1,
                               succeeded=0, failed=0, kind="api")
        self.rollouts[name] = rollout
        return copy.deepcopy(rollout)

    async def cancel_update(self, uuid: str, update_id: str, *, actor: str) -> JSON:
        for record in self.updates.get(uuid, []):
            if record["id"] == update_id:
                if record["state"] in ("succeeded", "failed", "cancelled"):
                    raise Conflict(f"update {update_id} is already {record['state']}")
                record["state"] = "cancelled"
                self.calls.append(("cancel_update", {"uuid": uuid, "id": update_id,
                                                     "actor": actor}))
                return copy.deepcopy(record)
        raise NotFound(f"no update {update_id} for device {uuid}")

    async def list_updates(self, state: str | None, older_than: float | None,
                           after: Key | None = None, limit: int = 100) -> Page:
        self.calls.append(("list_updates", {"state": state, "older_than": older_than}))
        return Page([r for records in self.updates.values() for r in records
                     if state is None or r["state"] == state][:limit], None)

    async def registry_pushes(self, pushes: Sequence[Any]) -> list[JSON]:
        self.calls.append(("registry_pushes", {"pushes": list(pushes)}))
        return [{"outcome": "ignored"} for _ in pushes]

    async def git_push(self, ref: str | None) -> None:
        self.calls.append(("git_push", {"ref": ref}))

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        return self.ready
