"""Stage 5, choose: which candidates get a command now, lowest wave hash first.

Only members of steps already started are eligible; per-device windows, maxInFlight,
the per-site budgets and the pace (maxPerMinute or the ramp) then bound how many. The
step machine decides *whether* a step runs; this stage only fills its free slots.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from fleetwave.planner.classify import Walk
from fleetwave.planner.context import TIMEZONE_LABEL, PassContext
from fleetwave.planner.model import DeviceView, RolloutState, SendUpdate
from fleetwave.planner.pacing import Pace, SiteBudgets
from fleetwave.planner.schedule import DeviceWindows

Candidate = tuple[int, DeviceView, int]
"""(wave hash, device, attempt to send)."""


@dataclass(frozen=True, slots=True)
class Choice:
    sends: tuple[SendUpdate, ...]
    wake: float | None
    """When the token bucket holds enough for the devices left waiting (None: not needed)."""
    held_back: bool = False
    """Devices that could go now were left for a later pass by `PassContext.send_limit`."""


NOTHING = Choice((), None)


def choose(ctx: PassContext, state: RolloutState, seen: Walk, limits: Sequence[int],
           in_flight: int, device_windows: DeviceWindows | None) -> Choice:
    """Pick the devices to command now: members of started steps, lowest hash first."""
    strategy = ctx.rollout.spec.strategy
    capacity = max(0, strategy.max_in_flight - in_flight)
    if capacity == 0:
        return NOTHING  # every slot taken: nothing to send, nothing to wait for
    cut = limits[state.current_step]  # members of steps 0..current: hash <= cut
    eligible = list(seen.candidates_up_to(cut))
    if device_windows is not None:
        eligible = [c for c in eligible
                    if device_windows.state(c[1].labels.get(TIMEZONE_LABEL))[0]]
    if not eligible:
        return NOTHING
    wake: float | None = None
    pace = Pace.of(strategy, state.ramp_since)
    if pace is not None:
        bucket = pace.bucket(state.tokens, state.tokens_at, ctx.now)
        if bucket.available < min(capacity, len(eligible)):
            # Devices are left waiting for tokens: wake when the next one is there
            # (after this pass's sends empty the bucket).
            wake = pace.ready_at(bucket.take(bucket.available), 1)
        capacity = min(capacity, bucket.available)
    held_back = ctx.send_limit is not None and min(capacity, len(eligible)) > ctx.send_limit
    if held_back:
        capacity = ctx.send_limit or 0
    if capacity <= 0:
        return Choice((), wake, held_back)
    if strategy.budgets:
        chosen = _within_budgets(ctx, seen, eligible, capacity)
    else:
        chosen = heapq.nsmallest(capacity, eligible, key=lambda c: c[0])
    sends = []
    for _, device, attempt in chosen:
        record = ctx.update_record(device, attempt)
        sends.append(SendUpdate(record, ctx.command(record)))
    return Choice(tuple(sends), wake, held_back)


def _within_budgets(ctx: PassContext, seen: Walk, eligible: list[Candidate],
                    capacity: int) -> list[Candidate]:
    """Lowest hash first, skipping a device whose site has no slot left.

    A device skipped here waits for its site, not for the wave: the next device in
    another site goes ahead. Slots free up when an update finishes, which is new input,
    so no wake-up is needed.
    """
    sites = SiteBudgets(ctx.rollout.spec.strategy.budgets, seen.busy)
    chosen: list[Candidate] = []
    for c in sorted(eligible, key=lambda c: c[0]):
        if len(chosen) >= capacity:
            break
        if sites.admit(c[1]):
            chosen.append(c)
    return chosen


def take_tokens(ctx: PassContext, state: RolloutState, sent: int) -> RolloutState:
    """The token bucket after this pass's sends (refilled up to now whatever was sent)."""
    pace = Pace.of(ctx.rollout.spec.strategy, state.ramp_since)
    if pace is None:
        return state
    bucket = pace.bucket(state.tokens, state.tokens_at, ctx.now).take(sent)
    return state.evolve(tokens=bucket.tokens, tokens_at=bucket.at)
