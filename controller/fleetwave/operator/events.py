"""Kubernetes Events for rollout transitions, aggregated the way `kubectl describe` expects.

A rollout that keeps hitting the same wall (a window closed, a budget
exceeded) would otherwise write one Event per pass. Like client-go's event
correlator, an Event with the same object, type, reason and message as one
sent within `window` seconds is not created again: the existing Event's
`count` goes up and its `lastTimestamp` moves, with a merge patch. Reasons are
CamelCase (`StepStarted`, `FailureBudgetExceeded`), types Normal or Warning,
and the involved object is the Rollout CR.

Per-device events (one device failed, one device was retried) stay in the
store and the HTTP API: in a fleet of 100,000 devices they would flood etcd.
`record` never waits on the network (the engine calls it inside a pass); a
background task posts. Only the leader posts; a standby drops transitions
(its engine does not plan, so it has none of its own).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from fleetwave import GROUP_VERSION
from fleetwave.operator.kube import ApiError, KubeClient, NotFoundError, object_path
from fleetwave.operator.source import ObjectRef

log = structlog.get_logger("fleetwave.operator.events")

COMPONENT = "fleetwave-operator"
MAX_QUEUE = 1000
"""Transitions waiting to be posted; beyond this the oldest are dropped (the store has them)."""


def camel_case(reason: str) -> str:
    """`step_started` or `step started` -> `StepStarted`; CamelCase stays as it is."""
    if re.fullmatch(r"[A-Z][A-Za-z0-9]*", reason):
        return reason
    words = [w for w in re.split(r"[^A-Za-z0-9]+", reason) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) or "Unknown"


def timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Sent:
    name: str
    count: int
    first: float
    last: float


@dataclass(frozen=True, slots=True)
class _Pending:
    ref: ObjectRef
    type: str
    reason: str
    message: str


class EventRecorder:
    """Posts and aggregates core/v1 Events about Rollout CRs."""

    def __init__(self, client: KubeClient, locate: Callable[[str], ObjectRef | None], *,
                 instance: str, window: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.locate = locate
        self.instance = instance
        self.window = window
        """Seconds within which a repeated event is counted instead of created (client-go: 10m)."""
        self.clock = clock
        self.active = False
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(MAX_QUEUE)
        self._sent: dict[tuple[str, str, str, str, str], _Sent] = {}

    def record(self, event: Mapping[str, Any]) -> None:
        """The engine's `on_event` callback: a rollout transition to show on its CR."""
        if event.get("device"):
            return
        ref = self.locate(str(event.get("rollout", "")))
        if ref is None:
            return
        self.emit(ref, str(event.get("type") or "Normal"), str(event.get("reason") or ""),
                  str(event.get("message") or ""))

    def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        if not self.active:
            return
        pending = _Pending(ref, "Warning" if type_ == "Warning" else "Normal",
                           camel_case(reason), message[:1024])
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(pending)

    def activate(self) -> None:
        self.active = True

    def deactivate(self) -> None:
        self.active = False
        while not self._queue.empty():
            self._queue.get_nowait()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                pending = getting.result()
                if not self.active:
                    continue
                try:
                    await self.post(pending.ref, pending.type, pending.reason, pending.message)
                except (TimeoutError, ApiError, OSError) as exc:
                    log.warning("event.post_failed", rollout=pending.ref.name,
                                reason=pending.reason, error=str(exc))
        finally:
            stopping.cancel()

    async def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Create the Event, or count one more of the same within the window."""
        now = self.clock()
        key = (ref.namespace, ref.uid or ref.name, type_, reason, message)
        sent = self._sent.get(key)
        path = object_path("v1", "events", ref.namespace)
        if sent is not None and now - sent.first <= self.window:
            sent.count += 1
            sent.last = now
            try:
                await self.client.merge_patch(f"{path}/{sent.name}", {
                    "count": sent.count, "lastTimestamp": timestamp(now)})
                return
            except NotFoundError:
                pass  # expired by the API server's TTL: start a new one
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": {"apiVersion": GROUP_VERSION, "kind": "Rollout",
                               "name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
            "type": type_, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": timestamp(now), "lastTimestamp": timestamp(now),
            "source": {"component": COMPONENT},
            "reportingComponent": f"fleetwave.io/{COMPONENT}",
            "reportingInstance": self.instance[:128],
        }
        await self.client.create(path, body)
        self._sent[key] = _Sent(name, 1, now, now)
        if len(self._sent) > 4096:  # forget the oldest correlations
            for old in sorted(self._sent, key=lambda k: self._sent[k].last)[:1024]:
                self._sent.pop(old, None)
