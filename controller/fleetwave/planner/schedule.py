"""When a rollout may send new commands: notBefore, freezes and cron windows.

Every answer comes with the next time it changes, so the engine can sleep until
then (`next_wake`) instead of polling. Windows are evaluated in an IANA zone with
cronsim, which follows Debian cron across DST changes: a 02:30 job on the spring
-forward day runs once, right after the gap, and once (not twice) on the
fall-back day. A window's duration is elapsed time: "4h" from a 02:00 start is
four real hours even on a day that is 23 hours long.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from fleetwave.planner.conditions import ConditionReason
from fleetwave.resources.model import Freeze, Rollout, Window

_MAX_CHAIN = 2000
"""Cron starts examined per answer; a window still open after this many is 'always open'."""


class ScheduleError(ValueError):
    """A window that cannot be evaluated (bad cron, unknown zone): the rollout is Failed."""


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether new commands may be sent now, why not, and when that changes."""

    open: bool
    reason: str | None = None
    message: str = ""
    next_change: float | None = None


OPEN = Gate(True)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """A ZoneInfo, cached (the planner asks for the same few zones 100,000 times)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name "
                            "like Europe/Berlin") from exc


def _starts(cron: str, after: float, tz: ZoneInfo) -> Iterator[float]:
    """Window starts strictly after `after`, as epoch seconds, strictly increasing.

    cronsim drops the fold of an ambiguous local time (the repeated hour in
    autumn) and may then answer with an instant already past: such answers are
    skipped, which also makes a job in the repeated hour run once, like cron.
    """
    last = after
    for dt in CronSim(cron, datetime.fromtimestamp(math.floor(after), tz)):
        t = float(dt.timestamp())
        if t > last:
            last = t
            yield t


def window_state(window: Window, zone_name: str, now: float) -> tuple[bool, float | None]:
    """(open now, time it next opens or closes; None: never).

    Example: cron "0 2 * * *", 4h, Europe/Berlin. At 03:00 local it is open and
    closes at 06:00; at 07:00 it is closed and opens at 02:00 the next day.
    Windows that overlap the next one merge into one longer window.
    """
    tz = zone(zone_name)
    duration = window.duration.total_seconds()
    end: float | None = None
    try:
        # Start early enough to see a window that opened before now (3 h covers DST).
        starts = _starts(window.cron, now - duration - 3 * 3600 - 1, tz)
        for _ in range(_MAX_CHAIN):
            s = next(starts, None)
            if s is None:
                return (True, end) if end is not None else (False, None)
            if s + duration <= now:
                continue
            if s <= now:
                end = s + duration if end is None else max(end, s + duration)
                continue
            if end is None:
                return False, s
            if s <= end:
                end = max(end, s + duration)
                continue
            return True, end
    except CronSimError as exc:
        raise ScheduleError(f"window cron {window.cron!r} is not valid: {exc}") from exc
    return (True, None) if end is not None else (False, None)


def window_gate(window: Window, zone_name: str, now: float) -> Gate:
    is_open, change = window_state(window, zone_name, now)
    if is_open:
        return Gate(True, next_change=change)
    when = (datetime.fromtimestamp(change, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if change is not None else "never")
    return Gate(False, ConditionReason.OUTSIDE_WINDOW,
                f"outside the window {window.cron!r} ({zone_name}); opens {when}", change)


def freeze_gate(freezes: tuple[Freeze, ...], now: float) -> Gate:
    """Closed inside any freeze; otherwise open until the next one starts."""
    upcoming: float | None = None
    for f in freezes:
        start, end = f.start.timestamp(), f.end.timestamp()
        if start <= now < end:
            # Chained freezes: stay closed until the last overlapping one ends.
            for g in freezes:
                gs, ge = g.start.timestamp(), g.end.timestamp()
                if gs <= end and ge > end:
                    end = ge
            why = f" ({f.reason})" if f.reason else ""
            return Gate(False, ConditionReason.FREEZE,
                        f"inside a freeze{why} until {f.end.isoformat()}", end)
        if start > now and (upcoming is None or start < upcoming):
            upcoming = start
    return Gate(True, next_change=upcoming)


def not_before_gate(not_before: datetime | None, now: float) -> Gate:
    if not_before is None:
        return OPEN
    at = not_before.timestamp()
    if now < at:
        return Gate(False, ConditionReason.NOT_BEFORE, f"not before {not_before.isoformat()}",
                    at)
    return OPEN


class DeviceWindows:
    """Per-zone window answers for `timezone: device`, computed once per zone per pass."""

    __slots__ = ("_cache", "fallback", "now", "window")

    def __init__(self, window: Window, now: float) -> None:
        self.window = window
        self.now = now
        self.fallback = window.fallback_timezone
        self._cache: dict[str | None, tuple[bool, float | None]] = {}

    def state(self, zone_label: str | None) -> tuple[bool, float | None]:
        hit = self._cache.get(zone_label)
        if hit is not None:
            return hit
        name = zone_label if zone_label else self.fallback
        try:
            result = window_state(self.window, name, self.now)
        except ScheduleError:
            if name == self.fallback:
                raise
            result = window_state(self.window, self.fallback, self.now)
        self._cache[zone_label] = result
        return result

    def next_changes(self) -> list[float]:
        return [c for _, c in self._cache.values() if c is not None]

    def any_open(self) -> bool:
        return any(o for o, _ in self._cache.values())


def rollout_gate(rollout: Rollout, now: float) -> Gate:
    """notBefore, then freezes, then a rollout-wide window (per-device windows come later).

    The one gate `plan` and `fleetwave plan`'s preview both apply.
    """
    strategy = rollout.spec.strategy
    gate = not_before_gate(strategy.not_before, now)
    if not gate.open:
        return gate
    freeze = freeze_gate(strategy.freezes, now)
    if not freeze.open:
        return freeze
    window = strategy.window
    if window is not None and not window.per_device:
        win = window_gate(window, window.timezone, now)
        if not win.open:
            return win
        changes = [c for c in (freeze.next_change, win.next_change) if c is not None]
        return Gate(True, next_change=min(changes) if changes else None)
    return freeze


@dataclass(frozen=True, slots=True)
class PassGates:
    """A pass's schedule: the rollout-wide gate, per-device windows, or why it is invalid."""

    gate: Gate
    device_windows: DeviceWindows | None
    invalid: str | None
    """A schedule that cannot be evaluated (unknown zone, bad cron): the rollout is Failed."""

    @classmethod
    def at(cls, rollout: Rollout, now: float) -> PassGates:
        window = rollout.spec.strategy.window
        try:
            gate = rollout_gate(rollout, now)
            device_windows = None
            if window is not None and window.per_device:
                device_windows = DeviceWindows(window, now)
                device_windows.state(None)  # validates the fallback zone
            ahead = rollout.spec.strategy.download_window
            if ahead is not None:  # validates the download window's cron and zone
                window_state(ahead, ahead.fallback_timezone if ahead.per_device
                             else ahead.timezone, now)
        except ScheduleError as exc:
            return cls(Gate(False, ConditionReason.INVALID_SPEC, str(exc)), None, str(exc))
        return cls(gate, device_windows, None)
