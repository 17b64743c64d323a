"""What `fleetwave plan` shows before a merge: each wave's devices and when it can start.

A reviewer of a Rollout change wants to know which devices the canary will touch and
when, before the change reaches the controller. The answer must never disagree with
what the controller later does, so this module decides nothing of its own: targeting
uses `resolve_targets`, the conflict rule `plan_fleet` itself calls; membership uses
`device_hash`/`thresholds`/`step_of` from waves.py, and every time comes from the
gates the planner uses (`rollout_gate` for notBefore, freezes and a rollout-wide window,
`DeviceWindows` for `timezone: device`) and its `Pace` for maxPerMinute and the ramp.

The times are a lower bound under one stated assumption: an update takes no time, so a
wave finishes when its last command is sent, and the next wave waits only for the
step's pause (and a prompt `promote` under manualApproval). Pure: `now` is an input.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fleetwave.planner.analysis import bounds
from fleetwave.planner.budget import TokenBucket
from fleetwave.planner.context import TIMEZONE_LABEL
from fleetwave.planner.model import DeviceView
from fleetwave.planner.pacing import Pace
from fleetwave.planner.schedule import DeviceWindows, ScheduleError, rollout_gate
from fleetwave.planner.selectors import Targets, compile_selector, resolve_targets
from fleetwave.planner.waves import device_hash, step_of, thresholds
from fleetwave.resources.durations import format_duration
from fleetwave.resources.inventory import device_labels, merge_inventories
from fleetwave.resources.model import DeviceInventory, Rollout

DEFAULT_GROUP_BY = ("region", "device_type")
"""Labels a reviewer most often asks "how many per …" about."""

NO_LABEL = "(none)"
"""The value shown for devices that lack a label being counted."""

HORIZON_SECONDS = 366 * 86400.0
"""How far ahead a start is searched: a window that does not open within a year is
reported as never, instead of looping over a cron that cannot fire."""

_MAX_SCHEDULE_STEPS = 20_000
"""Gate changes examined per wave (a daily window in four zones for a year is ~3,000)."""

ASSUMPTIONS = (
    "an update takes no time: a wave finishes when its last command is sent, so each "
    "time is the earliest possible; real updates, stableFor and failures only delay it",
    "the next wave starts after the previous one's pause (manualApproval: assumes a "
    "prompt `promote`)",
    "the rollout starts from its first step, as a new version does",
)
"""Printed with every preview, so nobody reads an estimate as a promise."""


@dataclass(frozen=True, slots=True)
class WavePreview:
    """One step of a rollout: who it touches and when sending can start and end."""

    step: int
    """1-based, as `fleetwave status` shows steps."""
    percent: int
    devices: tuple[str, ...]
    """Members that would get a command (sorted uuids); members already at the version
    are counted in `up_to_date` instead."""
    up_to_date: int
    by_label: Mapping[str, Mapping[str, int]]
    """label -> value -> devices of `devices` with it (NO_LABEL when missing)."""
    pause_after: float | None
    awaits_approval: bool
    """manualApproval: this wave waits for `promote` (the times assume it comes at once)."""
    ready_at: float | None
    """When the step starts: the previous wave sent, plus its pause (None: never)."""
    first_send: float | None
    half_sent: float | None
    """When half the wave's devices have their command: with per-device windows, the
    time most of a wave spread over zones is under way."""
    sending_done: float | None


@dataclass(frozen=True, slots=True)
class RolloutPreview:
    name: str
    component: str
    version: str
    file: str | None
    targeted: int
    """Devices this rollout may touch: selected, not excluded, not conflicted (what
    `status.targeted` will show)."""
    excluded: tuple[str, ...]
    conflicted: tuple[str, ...]
    conflicts_with: tuple[str, ...]
    overridden: tuple[str, ...]
    """Devices left to an ad-hoc API update of the same component."""
    up_to_date: int
    unassigned: int
    """Targeted devices past the last step (its percent is below 100)."""
    starts_at: float | None
    """When the rollout itself starts (notBefore, freezes, a rollout-wide window)."""
    waves: tuple[WavePreview, ...]
    notes: tuple[str, ...] = ()
    error: str | None = None
    """A schedule the planner cannot evaluate (unknown zone, bad cron): it would be Failed."""

    @property
    def to_update(self) -> int:
        return sum(len(w.devices) for w in self.waves)


@dataclass(frozen=True, slots=True)
class FleetPreview:
    now: float
    devices: int
    rollouts: tuple[RolloutPreview, ...]
    group_by: tuple[str, ...]
    assumptions: tuple[str, ...] = ASSUMPTIONS

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, every list sorted, every time RFC 3339 UTC."""
        return {
            "now": rfc3339(self.now), "devices": self.devices,
            "groupBy": list(self.group_by), "assumptions": list(self.assumptions),
            "rollouts": [_rollout_dict(r) for r in self.rollouts],
        }


def rfc3339(t: float | None) -> str | None:
    """Seconds since the epoch as `2026-03-29T01:00:00Z` (None stays None).

    >>> rfc3339(0.0)
    '1970-01-01T00:00:00Z'
    """
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rollout_dict(r: RolloutPreview) -> dict[str, Any]:
    return {
        "name": r.name, "component": r.component, "version": r.version, "file": r.file,
        "targeted": r.targeted, "toUpdate": r.to_update, "upToDate": r.up_to_date,
        "excluded": {"count": len(r.excluded), "devices": list(r.excluded)},
        "conflicted": {"count": len(r.conflicted), "with": list(r.conflicts_with),
                       "devices": list(r.conflicted)},
        "overridden": {"count": len(r.overridden), "devices": list(r.overridden)},
        "unassigned": r.unassigned, "startsAt": rfc3339(r.starts_at),
        "error": r.error, "notes": list(r.notes),
        "waves": [{
            "step": w.step, "percent": w.percent, "members": len(w.devices),
            "upToDate": w.up_to_date,
            "byLabel": {k: dict(v) for k, v in w.by_label.items()},
            "pauseAfterSeconds": w.pause_after, "awaitsApproval": w.awaits_approval,
            "readyAt": rfc3339(w.ready_at), "earliestStart": rfc3339(w.first_send),
            "halfSent": rfc3339(w.half_sent), "sendingDone": rfc3339(w.sending_done),
            "devices": list(w.devices),
        } for w in r.waves],
    }


# -- inputs --------------------------------------------------------------------------------


def apply_inventory(devices: Sequence[DeviceView],
                    inventories: Sequence[DeviceInventory]) -> list[DeviceView]:
    """Labels from DeviceInventory files among the previewed paths win over the fleet's,
    as the controller merges them once the change is merged."""
    merged = merge_inventories(inv.labels for inv in inventories)
    if not merged:
        return list(devices)
    return [replace(d, labels=device_labels(d.labels, merged[d.uuid])) if d.uuid in merged
            else d for d in devices]


# -- targeting: plan_fleet's rule ------------------------------------------------------------


def wave_members(rollout: Rollout, targeted: Sequence[DeviceView]) -> list[list[DeviceView]]:
    """Targeted devices per step (index len(steps): past the last step), as `plan` cuts them."""
    percents = [s.percent for s in rollout.spec.strategy.steps]
    hashed = [(device_hash(rollout.name, d.uuid), d) for d in targeted]
    limits = thresholds(percents, sorted(h for h, _ in hashed))
    waves: list[list[DeviceView]] = [[] for _ in range(len(percents) + 1)]
    for h, d in hashed:
        waves[step_of(h, limits)].append(d)
    return waves


# -- schedule ------------------------------------------------------------------------------


class _Never(Exception):
    """No command can be sent within the horizon."""


def _open_at(rollout: Rollout, t: float, until: float) -> tuple[float, float]:
    """(first time >= t the rollout-wide gates are open, when they next close)."""
    for _ in range(_MAX_SCHEDULE_STEPS):
        if t > until:
            raise _Never
        gate = rollout_gate(rollout, t)
        if gate.open:
            return t, gate.next_change if gate.next_change is not None else math.inf
        if gate.next_change is None:
            raise _Never
        t = gate.next_change
    raise _Never


@dataclass(slots=True)
class _Sender:
    """Sends one wave's commands in the planner's order: lowest wave hash first among the
    devices whose window is open, one token each when maxPerMinute is set."""

    rollout: Rollout
    until: float
    bucket: TokenBucket | None
    pace: Pace | None = None

    def send(self, devices: Sequence[DeviceView], ready: float) -> list[float]:
        window = self.rollout.spec.strategy.window
        per_device = window is not None and window.per_device
        pending: dict[str | None, list[tuple[int, str]]] = {}
        for d in devices:
            zone_label = d.labels.get(TIMEZONE_LABEL) if per_device else None
            pending.setdefault(zone_label, []).append((device_hash(self.rollout.name, d.uuid),
                                                       d.uuid))
        for members in pending.values():
            members.sort()
        sent: list[float] = []
        t = ready
        for _ in range(_MAX_SCHEDULE_STEPS):
            if not pending:
                return sent
            t, change = _open_at(self.rollout, t, self.until)
            open_zones: list[str | None] = []
            if per_device:
                assert window is not None
                zones = DeviceWindows(window, t)
                for zone_label in sorted(pending, key=lambda z: (z is not None, z or "")):
                    is_open, next_change = zones.state(zone_label)
                    if is_open:
                        open_zones.append(zone_label)
                    if next_change is not None:
                        change = min(change, next_change)
            else:
                open_zones = list(pending)
            queues = [[(h, u, z) for h, u in pending[z]] for z in open_zones]
            for h, _uuid, zone_label in heapq.merge(*queues):
                at = t
                if self.bucket is not None and self.pace is not None:
                    bucket = self.pace.refill(self.bucket, t)
                    at = max(t, self.pace.ready_at(bucket, 1))
                if at >= change:
                    break
                if self.bucket is not None and self.pace is not None:
                    self.bucket = self.pace.refill(self.bucket, at).take(1)
                sent.append(at)
                t = at
                queue = pending[zone_label]
                assert queue[0][0] == h
                queue.pop(0)
                if not queue:
                    del pending[zone_label]
            if not pending:
                return sent
            if math.isinf(change):
                raise _Never
            t = max(t, change)
        raise _Never


def preview(rollouts: Sequence[Rollout], devices: Sequence[DeviceView], now: float, *,
            others: Sequence[Rollout] = (), group_by: Sequence[str] = DEFAULT_GROUP_BY,
            files: Mapping[str, str] | None = None) -> FleetPreview:
    """Preview `rollouts` (changed or new) against `devices`, beside the `others` already
    running (a same-named one is replaced, as merging the change would).

    Same inputs, same output: devices and lists are sorted, `now` is an input.
    """
    names = {r.name for r in rollouts}
    every = [*rollouts, *(o for o in others if o.name not in names)]
    targets = resolve_targets(every, devices)
    labels = tuple(dict.fromkeys(group_by))
    out = [_preview_one(r, targets[r.name], _excluded(r, devices), now, labels,
                        (files or {}).get(r.name))
           for r in sorted(rollouts, key=lambda r: r.name)]
    return FleetPreview(now=now, devices=len(devices), rollouts=tuple(out), group_by=labels)


def _excluded(rollout: Rollout, devices: Sequence[DeviceView]) -> list[str]:
    """Devices the selector takes that `spec.exclude` keeps out (sorted uuids)."""
    excluded = frozenset(rollout.spec.exclude)
    if not excluded:
        return []
    selects = compile_selector(rollout.spec.selector)
    return sorted(d.uuid for d in devices if d.uuid in excluded and selects(d))


def _strategy_notes(rollout: Rollout, waves: Sequence[Sequence[DeviceView]]) -> list[str]:
    """What a reader of the preview must know of the strategy beyond the times shown."""
    spec = rollout.spec
    strategy = spec.strategy
    notes: list[str] = []
    if spec.paused:
        notes.append("spec.paused is set: nothing is sent until it is cleared")
    if strategy.manual_approval:
        notes.append("manualApproval: each wave after the first waits for `promote`")
    for budget in strategy.budgets:
        notes.append(f"budget: at most {budget.max_in_flight} device(s) updating at once per "
                     f"{budget.group_by!r} value; updates taking "
                     "time make waves longer than shown")
    if strategy.ramp is not None:
        ramp = strategy.ramp
        notes.append(f"ramp: {ramp.start_per_minute}/min, x{ramp.factor:g} every "
                     f"{ramp.every.total_seconds():g}s up to {ramp.max_per_minute}/min "
                     "(times assume no pause, which restarts it)")
    for i, step in enumerate(strategy.steps):
        if step.analysis is not None:
            a = step.analysis
            notes.append(f"wave {i + 1} waits for its analysis: {a.query} inside {bounds(a)} "
                         f"for {format_duration(a.for_)} after the wave (Prometheus "
                         "unreachable or without data holds it; out of bounds as long: "
                         f"{spec.failure_policy.action.value})")
    if waves[-1]:
        notes.append(f"{len(waves[-1])} targeted device(s) are past the last step "
                     f"({strategy.steps[-1].percent}%) and get no command")
    return notes


def _preview_one(rollout: Rollout, target: Targets, excluded: Sequence[str], now: float,
                 group_by: Sequence[str], file: str | None) -> RolloutPreview:
    spec = rollout.spec
    strategy = spec.strategy
    waves = wave_members(rollout, target.targeted)
    notes = _strategy_notes(rollout, waves)

    def needs(d: DeviceView) -> bool:
        return spec.force or d.versions.get(spec.component) != spec.version

    until = now + HORIZON_SECONDS
    error: str | None = None
    starts_at: float | None = None
    sender: _Sender | None = None
    try:
        starts_at, _ = _open_at(rollout, now, until)
        if strategy.window is not None and strategy.window.per_device:
            DeviceWindows(strategy.window, now).state(None)  # the fallback zone must exist
        pace = Pace.of(strategy, starts_at)
        bucket = pace.bucket(None, None, starts_at) if pace is not None else None
        sender = _Sender(rollout, until, bucket, pace)
    except ScheduleError as exc:
        error = str(exc)
        starts_at = None
    except _Never:
        starts_at = None
        notes.append("the rollout cannot start within a year (notBefore, freezes, window)")

    previews: list[WavePreview] = []
    ready = starts_at
    for i, step in enumerate(strategy.steps):
        members = waves[i]
        todo = sorted((d for d in members if needs(d)), key=lambda d: d.uuid)
        sends: list[float] = []
        done_at: float | None = None
        if ready is not None and sender is not None:
            try:
                sends = sender.send(todo, ready)
                done_at = sends[-1] if sends else ready
            except (_Never, ScheduleError) as exc:
                if isinstance(exc, ScheduleError):
                    error = str(exc)
                notes.append(f"wave {i + 1} cannot finish sending within a year")
                sends = []
        pause = step.pause.total_seconds() if step.pause else None
        counts = {label: dict(sorted(Counter(d.labels.get(label, NO_LABEL)
                                             for d in todo).items()))
                  for label in group_by}
        previews.append(WavePreview(
            step=i + 1, percent=step.percent, devices=tuple(d.uuid for d in todo),
            up_to_date=len(members) - len(todo), by_label=counts, pause_after=pause,
            awaits_approval=strategy.manual_approval and i > 0, ready_at=ready,
            first_send=sends[0] if sends else None,
            half_sent=sends[math.ceil(len(sends) / 2) - 1] if sends else None,
            sending_done=sends[-1] if sends and len(sends) == len(todo) else None,
        ))
        soak = max(pause or 0.0, step.analysis.for_.total_seconds() if step.analysis else 0.0)
        ready = done_at + soak if done_at is not None else None

    return RolloutPreview(
        name=rollout.name, component=spec.component, version=spec.version, file=file,
        targeted=len(target.targeted), excluded=tuple(excluded),
        conflicted=tuple(sorted(target.conflicted)),
        conflicts_with=tuple(sorted(target.conflicts_with)),
        overridden=tuple(sorted(target.overridden)),
        up_to_date=sum(1 for d in target.targeted if not needs(d)),
        unassigned=len(waves[-1]), starts_at=starts_at, waves=tuple(previews),
        notes=tuple(notes), error=error,
    )
