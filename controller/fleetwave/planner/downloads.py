"""Stage 5b, downloads: fetch ahead of the install window (`strategy.download`, DESIGN 9.5).

Inside `strategy.download.window`, and only while a device's install `window` is closed
for it, the devices of the current wave that an install would go to next are sent
`action: download`: the device fetches and verifies the artifact and installs nothing.
Who: the install candidates of steps started so far (before the rollout starts, the
first step's), lowest wave hash first, at most `maxInFlight` downloads open at once (a
pool of their own: a download occupies no install slot). Each device gets one download
per generation: a failed one is not repeated, since the install fetches the artifact
anyway. Freezes and notBefore hold downloads too (they hold every new command); pacing
(maxPerMinute, ramp) and per-site budgets are for installs and do not apply. A device
that `requires` first takes to an intermediate version gets no download: the rollout's
artifact is the target's.

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
from fleetwave.resources.model import Rollout, Window
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


class DownloadSchedule:
    """Whether a device may be sent a download at `now`, by its zone, and when that next
    changes: the one rule `plan_downloads` and `fleetwave plan`'s preview both apply.

    Open when the download window is open for the device and its install window is closed
    only because it is outside it (notBefore and freezes hold downloads too).
    """

    __slots__ = ("_answers", "_download", "_held", "_install")

    def __init__(self, rollout: Rollout, gates: PassGates, now: float) -> None:
        strategy = rollout.spec.strategy
        gate = gates.gate
        self._answers: dict[str | None, tuple[bool, float | None]] = {}
        self._held: tuple[bool, float | None] | None = None
        self._install: WindowState | None = None
        self._download: WindowState | None = None
        if strategy.download_window is None or strategy.window is None:
            self._held = (False, None)
        elif not gate.open and gate.reason != ConditionReason.OUTSIDE_WINDOW:
            self._held = (False, gate.next_change)  # notBefore or a freeze
        elif gate.open and gates.device_windows is None:
            self._held = (False, gate.next_change)  # installs are open everywhere
        else:
            if gate.open:  # a per-device install window, closed for some zones
                assert gates.device_windows is not None
                self._install = gates.device_windows.state
            self._download = windows_of(strategy.download_window, now)

    def state(self, zone: str | None) -> tuple[bool, float | None]:
        if self._held is not None:
            return self._held
        hit = self._answers.get(zone)
        if hit is None:
            hit = self._answers[zone] = self._answer(zone)
        return hit

    def _answer(self, zone: str | None) -> tuple[bool, float | None]:
        assert self._download is not None
        changes: list[float] = []
        if self._install is not None:
            installs, change = self._install(zone)
            if change is not None:
                changes.append(change)
            if installs:
                return False, min(changes) if changes else None
        opened, change = self._download(zone)
        if change is not None:
            changes.append(change)
        return opened, min(changes) if changes else None


def plan_downloads(ctx: PassContext, state: RolloutState, seen: Walk, limits: Sequence[int],
                   gates: PassGates) -> Downloads:
    """The downloads to send now (none when the strategy has no download window).

    The caller has checked that the rollout runs (not stopped, paused, invalid or done);
    `DownloadSchedule` decides by each device's zone.
    """
    strategy = ctx.rollout.spec.strategy
    if strategy.download_window is None:
        return NO_DOWNLOADS
    capacity = strategy.max_in_flight - seen.outcomes[Outcome.DOWNLOADING]
    fetched = seen.decisions.fetched
    waiting = [c for c in seen.candidates_up_to(limits[state.current_step])
               if c[1].uuid not in fetched
               and ctx.target_for(c[1].versions.get(ctx.component)) == ctx.version]
    if capacity <= 0 or not waiting:
        return NO_DOWNLOADS
    schedule = DownloadSchedule(ctx.rollout, gates, ctx.now)
    changes: set[float] = set()
    due = []
    for c in waiting:
        opened, change = schedule.state(c[1].labels.get(TIMEZONE_LABEL))
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
