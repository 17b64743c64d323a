"""A recording engine double: what the kopf handlers fed it, and whether it planned."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fleetwave.api.ports import NotFound
from fleetwave.resources.model import Rollout


class RecordingEngine:
    """Shaped like `fleetwave.runtime.engine.Engine` where the operator touches it."""

    def __init__(self) -> None:
        self.on_status: Any = None
        self.on_event: Any = None
        self.rollouts: dict[str, Rollout] = {}
        self.inventory: dict[str, dict[str, str]] = {}
        self.revisions: list[str | None] = []
        self.controls: list[tuple[str, str, str, str | None]] = []
        self.starts = 0
        self.passes = 0
        self.running = False
        self.statuses: dict[str, dict[str, Any]] = {}

    def set_source(self, rollouts: Mapping[str, Rollout],
                   inventory: Mapping[str, Mapping[str, str]], revision: str | None) -> None:
        self.rollouts = dict(rollouts)
        self.inventory = {k: dict(v) for k, v in inventory.items()}
        self.revisions.append(revision)

    async def start(self) -> None:
        self.starts += 1

    async def run(self, stop: asyncio.Event) -> None:
        self.running = True
        try:
            while not stop.is_set():
                self.passes += 1
                for name, rollout in list(self.rollouts.items()):
                    status = self.statuses.get(name) or {
                        "phase": "Paused" if rollout.spec.paused else "Progressing",
                        "currentStep": 0, "targeted": 4, "progress": "1/4",
                        "counts": {"succeeded": 1, "pending": 3}, "failureRate": 0.0,
                        "conditions": [{"type": "Progressing", "status": "True",
                                        "reason": "StepStarted", "message": "step 0"}]}
                    status = {**status, "observedGeneration": rollout.generation,
                              "revision": rollout.source.revision}
                    if self.on_status is not None:
                        await self.on_status(name, status)
                await asyncio.sleep(0.05)
        finally:
            self.running = False

    async def control(self, name: str, op: str, *, actor: str,
                      device: str | None = None) -> dict[str, Any]:
        if name not in self.rollouts:
            raise NotFound(f"no rollout named {name!r}")
        self.controls.append((name, op, actor, device))
        return {"name": name}
