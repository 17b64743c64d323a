"""Stage 5b, downloads: fetch ahead of the install window (`strategy.download`, DESIGN 9.5).

Inside `strategy.download.window`, and only while a device's install `window` is closed
for it, the devices of the current wave that an install would go to next are sent
`action: download`: the device fetches and verifies the artifact and installs nothing.
Who: the install candidates of steps started so far (before the rollout starts, the
first step's), lowest wave hash first, at most `maxInFlight` downloads open at once (a
pool of their own: a download occupies no install slot). Each device gets one download
per generation: a failed one is not repeated, since the install fetches the artifact
anyway. Freezes and notBefore hold downloads too (they hold every new command); pacing
(maxPerMinute, ramp) and per-site budgets are for installs and do not apply.

An install does not wait for a download: a device that has none when its window opens
is installed like any other and downloads as part of the update. One that has downloaded
is a candidate (DOWNLOADED) from the first pass of its window, so it installs at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleetwave.planner.classify import Outcome, Walk
from fleetwave.planner.conditions import ConditionReason
from fleetwave.planner.context import TIMEZONE_LABEL, PassContext, record_ids
from fleetwave.planner.model import DeviceView, RolloutState, SendUpdate
from fleetwave.planner.schedule import DeviceWindows, PassGates, window_state
from fleetwave.resources.model import Window
from fleetwave.resources.vocabulary import Operation
from fleetwave.updates.model import UpdateRecord, UpdateState, next_release

WindowState = Callable[[str | None], tuple[bool, float | None]]
"""A device's `timezone` label -> (window open now, when that next changes)."""


@dataclass(frozen=True, slots=True)
class Downloads:
    sends: tuple[SendUpdate, ...]
    changes: tuple[float, ...]
    """When a window examined for a waiting device next opens or closes: wake then."""


NO_DOWNLOADS = Downloads((), ())


def windows_of(window: Window, now: float) -> WindowState:
    """Per-device answers of `window` at `now` (one answer for a rollout-wide zone)."""
    if window.per_device:
        return DeviceWindows(window, now).state
    answer = window_state(window, window.timezone, now)
    return lambda _zone: answer


def plan_downloads(ctx: PassContext, state: RolloutState, seen: Walk, limits: Sequence[int],
                   gates: PassGates) -> Downloads:
    """The downloads to send now (none when the strategy has no download window).

    The caller has checked that the rollout runs (not stopped, paused, invalid or done);
    here the schedule decides: the rollout-wide gate may be closed only by the install
    window, never by notBefore or a freeze.
    """
    strategy = ctx.rollout.spec.strategy
    if strategy.download_window is None or strategy.window is None:
        return NO_DOWNLOADS
    gate = gates.gate
    if not gate.open and gate.reason != ConditionReason.OUTSIDE_WINDOW:
        return NO_DOWNLOADS
    capacity = strategy.max_in_flight - seen.outcomes[Outcome.DOWNLOADING]
    fetched = seen.decisions.fetched
    waiting = [c for c in seen.candidates_up_to(limits[state.current_step])
               if c[1].uuid not in fetched
               and ctx.target_for(c[1].versions.get(ctx.component)) == ctx.version]
    if capacity <= 0 or not waiting:
        return NO_DOWNLOADS
    install: WindowState | None = None
    if gate.open:  # open everywhere, or a per-device install window closed for some
        if gates.device_windows is None:
            return NO_DOWNLOADS
        install = gates.device_windows.state
    download = windows_of(strategy.download_window, ctx.now)
    changes: set[float] = set()
    due = []
    for c in waiting:
        zone = c[1].labels.get(TIMEZONE_LABEL)
        if install is not None:
            installs, change = install(zone)
            if installs:
                continue  # its install window is open: it is installed instead
            if change is not None:
                changes.add(change)
        opened, change = download(zone)
        if change is not None:
            changes.add(change)
        if opened:
            due.append(c)
    chosen = heapq.nsmallest(capacity, due, key=lambda c: c[0])
    sends = tuple(_send(ctx, device, attempt) for _, device, attempt in chosen)
    return Downloads(sends, tuple(sorted(changes)))


def _send(ctx: PassContext, device: DeviceView, attempt: int) -> SendUpdate:
    """A download attempt: numbered after the install it prepares, with ids of its own."""
    rid, cid = record_ids(ctx.name, ctx.generation, device.uuid, attempt, Operation.DOWNLOAD)
    reported = device.versions.get(ctx.component)
    record = UpdateRecord(
        id=rid, device=device.uuid, rollout=ctx.name, component=ctx.component,
        to_version=ctx.version, state=UpdateState.PENDING, attempt=attempt,
        correlation_id=cid, created_at=ctx.now, updated_at=ctx.now, from_version=reported,
        generation=ctx.generation, action=Operation.DOWNLOAD, release=next_release(ctx.now))
    return SendUpdate(record, ctx.command(record, "download"))
