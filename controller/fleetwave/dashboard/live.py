"""The dashboard's live feed: the engine's events and status changes, fanned out to browsers.

The engine calls `on_event` (sync) and `on_status` (awaited inside a reconcile pass),
so both only record and return: no browser can slow a pass down. Each open stream
is a `Subscriber` with a bounded backlog; one that falls behind loses its backlog
and is told to `resync` (fetch afresh) instead of memory growing with a slow client.

The feed also keeps, per rollout, a bounded series of status samples (done,
failure rate, step) taken from the status changes it is given: the dashboard's
progress chart is drawn from these and the audit trail, with no extra store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetwave.metrics import Metrics

MAX_BACKLOG = 200
"""Messages a stream may have queued before it is told to resync instead."""

MAX_SAMPLES = 720
"""Samples kept per rollout; when full every other one is dropped, so the whole
history stays, at half the resolution (12 minutes at 1 s, then 24 at 2 s, ...)."""

MAX_TRACKED_ROLLOUTS = 1000
"""Rollouts with a sample series; the one sampled longest ago goes first."""


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    done: int
    targeted: int
    failure_rate: float
    step: int
    phase: str

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "done": self.done, "targeted": self.targeted,
                "failureRate": self.failure_rate, "step": self.step, "phase": self.phase}


def sample_of(status: Mapping[str, Any], now: float) -> Sample:
    """The chart's point of a rollout status (DESIGN.md section 8 field names)."""
    progress = str(status.get("progress") or "0/0")
    done_text, _, targeted_text = progress.partition("/")
    try:
        done = int(done_text)
    except ValueError:
        done = 0
    try:
        targeted = int(status.get("targeted", targeted_text or 0))
    except (TypeError, ValueError):
        targeted = 0
    return Sample(time=now, done=done, targeted=targeted,
                  failure_rate=float(status.get("failureRate") or 0.0),
                  step=int(status.get("currentStep") or 0),
                  phase=str(status.get("phase") or "Pending"))


@dataclass(slots=True, eq=False)
class Subscriber:
    """One open stream: what it has not been sent yet."""

    limit: int = MAX_BACKLOG
    events: list[dict[str, Any]] = field(default_factory=list)
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Latest status per rollout changed since the last send (coalesced)."""
    overflowed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add_event(self, event: dict[str, Any]) -> None:
        if len(self.events) >= self.limit:
            self.events.clear()
            self.overflowed = True
        else:
            self.events.append(event)
        self.wake.set()

    def add_status(self, name: str, status: dict[str, Any]) -> None:
        if name not in self.rollouts and len(self.rollouts) >= self.limit:
            self.rollouts.clear()
            self.overflowed = True
        else:
            self.rollouts[name] = status
        self.wake.set()

    def take(self) -> tuple[bool, dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """(resync?, statuses, events) since the last call, and forget them."""
        out = (self.overflowed, self.rollouts, self.events)
        self.overflowed, self.rollouts, self.events = False, {}, []
        self.wake.clear()
        return out


class TooManyStreams(Exception):
    """More browsers than `max_streams` asked for a stream."""


class LiveFeed:
    """Fan-out of rollout events and status changes to the dashboard's open streams."""

    def __init__(self, metrics: Metrics | None = None, *, max_streams: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_streams = max_streams
        """Open streams allowed at once; each costs a connection and a little memory."""
        self.clock = clock
        self._subscribers: set[Subscriber] = set()
        self._samples: dict[str, list[Sample]] = {}
        self.metrics = metrics

    # -- the engine's side ---------------------------------------------------------------

    def on_event(self, event: Mapping[str, Any]) -> None:
        """An audit-trail event (the engine's `on_event` sink)."""
        item = dict(event)
        for subscriber in self._subscribers:
            subscriber.add_event(item)

    async def on_status(self, name: str, status: Mapping[str, Any]) -> None:
        """A rollout's changed status (the engine's `on_status` sink)."""
        self.record_sample(name, status)
        brief = brief_status(status)
        for subscriber in self._subscribers:
            subscriber.add_status(name, brief)

    def record_sample(self, name: str, status: Mapping[str, Any]) -> None:
        sample = sample_of(status, self.clock())
        series = self._samples.pop(name, None)
        if series is None:
            series = []
            if len(self._samples) >= MAX_TRACKED_ROLLOUTS:
                del self._samples[next(iter(self._samples))]
        self._samples[name] = series  # re-inserted: the dict is ordered by last sample
        if len(series) >= 2 and _same_point(series[-1], sample) and _same_point(
                series[-2], sample):
            series[-1] = sample  # a flat run keeps its first and its latest point
            return
        series.append(sample)
        if len(series) > MAX_SAMPLES:
            kept = series[::2]
            if kept[-1] is not series[-1]:
                kept.append(series[-1])
            series[:] = kept

    def samples(self, name: str) -> list[Sample]:
        return list(self._samples.get(name, ()))

    # -- the browser's side ----------------------------------------------------------------

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        if len(self._subscribers) >= self.max_streams:
            if self.metrics is not None:
                self.metrics.dashboard_streams_refused.inc()
            raise TooManyStreams(f"{self.max_streams} dashboard streams are open already; "
                                 "close a dashboard tab or raise the limit")
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        self._changed()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._changed()

    def _changed(self) -> None:
        if self.metrics is not None:
            self.metrics.dashboard_streams.set(len(self._subscribers))


def _same_point(a: Sample, b: Sample) -> bool:
    """Only the time moved: keep one point, not a flat run of them."""
    return (a.done, a.targeted, a.failure_rate, a.step, a.phase) == (
        b.done, b.targeted, b.failure_rate, b.step, b.phase)


def brief_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a stream carries of a status: enough to redraw a row, never device lists."""
    keys = ("phase", "currentStep", "steps", "targeted", "counts", "failureRate",
            "progress", "message", "revision")
    return {k: status[k] for k in keys if k in status}
