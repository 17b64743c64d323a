"""Rollout status into the CR's status subresource, coalesced and rate-limited per object.

The engine reports a rollout's status after every pass in which it changed;
during a busy wave that is several times a second, for each rollout. The API
server (and every `kubectl get -w`) should see far less: the latest status of
each object at most once per `min_interval`, and nothing at all when it did
not change. So `submit` only records the wish (it never waits on the network,
it is called from inside the engine's pass) and one background task sends
JSON merge patches to `/status`, keys that disappeared sent as `null`.

Only the leader writes: `active` is off on a standby, wishes are kept (the
latest per object) and flushed the moment it becomes the leader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from fleetwave import GROUP_VERSION
from fleetwave.background import wake_or_stop
from fleetwave.operator.kube import ApiError, KubeClient, NotFoundError, object_path
from fleetwave.operator.source import ObjectRef

log = structlog.get_logger("fleetwave.operator.status")

STATUS_FIELDS = ("phase", "currentStep", "observedGeneration", "revision", "targeted",
                 "done", "progress", "counts", "failureRate", "message", "conditions")
"""What the CRD's status schema holds; anything else the engine reports stays in the API."""


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; empty when equal."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, Mapping) and isinstance(old[key], Mapping):
            sub = merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def crd_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's status cut to the CRD's fields (a real API server prunes the rest)."""
    return {k: status[k] for k in STATUS_FIELDS if k in status and status[k] is not None}


class StatusWriter:
    """Latest status per Rollout, sent to `/status` only when it differs from the cluster's."""

    def __init__(self, client: KubeClient, locate: Callable[[str], ObjectRef | None], *,
                 min_interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 plural: str = "rollouts") -> None:
        self.client = client
        self.locate = locate
        self.min_interval = min_interval
        """Seconds between two patches of one object: a wave's burst becomes one write."""
        self.clock = clock
        self.plural = plural
        self.active = False
        self._wanted: dict[str, dict[str, Any]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._direct: dict[tuple[str, str], tuple[ObjectRef, dict[str, Any]]] = {}
        self._wake = asyncio.Event()

    def submit(self, name: str, status: Mapping[str, Any]) -> None:
        """Record the latest status of a rollout; never blocks."""
        self._wanted[name] = crd_status(status)
        self._wake.set()

    async def on_status(self, name: str, status: Mapping[str, Any]) -> None:
        """The engine's `on_status` callback."""
        self.submit(name, status)

    def activate(self) -> None:
        self.active = True
        self._written.clear()  # another leader may have written since: trust the watch
        self._wake.set()

    def deactivate(self) -> None:
        self.active = False

    def forget(self, name: str) -> None:
        self._wanted.pop(name, None)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = await self.flush() if self.active else None
            self._wake.clear()
            await wake_or_stop(self._wake, stop, delay)

    def submit_ref(self, ref: ObjectRef, status: Mapping[str, Any]) -> None:
        """A status for one CR that the engine does not know (an invalid one)."""
        self._direct[(ref.namespace, ref.name)] = (ref, crd_status(status))
        self._wake.set()

    async def flush(self) -> float | None:
        """Send what is due; returns how long until the next object is due (None: nothing)."""
        due: list[float] = []
        for name in list(self._wanted):
            wanted = self._wanted.get(name)
            ref = self.locate(name)
            if wanted is None or ref is None:
                continue
            outcome = await self._send(ref, wanted)
            if outcome is None:
                if self._wanted.get(name) is wanted:
                    self._wanted.pop(name, None)
            else:
                due.append(outcome)
        for key, (ref, wanted) in list(self._direct.items()):
            outcome = await self._send(ref, wanted)
            if outcome is None:
                if self._direct.get(key, (None, None))[1] is wanted:
                    self._direct.pop(key, None)
            else:
                due.append(outcome)
        return min(due) if due else None

    async def _send(self, ref: ObjectRef, wanted: dict[str, Any]) -> float | None:
        """Patch one object if due; None when done (sent, equal or gone), else seconds to wait."""
        if not self.active:
            return self.min_interval
        key = (ref.namespace, ref.name)
        written = self._written.get(key, dict(ref.status))
        patch = merge_patch(written, wanted)
        if not patch:
            return None
        wait = self._last.get(key, -1e18) + self.min_interval - self.clock()
        if wait > 0:
            return wait
        try:
            await self.client.merge_patch(
                object_path(GROUP_VERSION, self.plural, ref.namespace, ref.name, "status"),
                {"status": patch})
        except NotFoundError:
            return None  # deleted meanwhile; nothing to show it on
        except (TimeoutError, ApiError, OSError) as exc:
            log.warning("status.patch_failed", rollout=ref.name, namespace=ref.namespace,
                        error=str(exc))
            return self.min_interval
        self._last[key] = self.clock()
        self._written[key] = wanted
        return None
