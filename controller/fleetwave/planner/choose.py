"""Stage 5, choose: which candidates get a command now, lowest wave hash first.

Only members of steps already started are eligible; per-device windows, maxInFlight
and the maxPerMinute token bucket then bound how many. The step machine decides
*whether* a step runs; this stage only fills its free slots.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from fleetwave.planner.budget import TokenBucket
from fleetwave.planner.classify import Walk
from fleetwave.planner.context import TIMEZONE_LABEL, PassContext
from fleetwave.planner.model import RolloutState, SendUpdate
from fleetwave.planner.schedule import DeviceWindows


@dataclass(frozen=True, slots=True)
class Choice:
    sends: tuple[SendUpdate, ...]
    wake: float | None
    """When the token bucket holds enough for the devices left waiting (None: not needed)."""


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
    if strategy.max_per_minute is not None:
        bucket = TokenBucket.restore(strategy.max_per_minute, state.tokens, state.tokens_at,
                                     ctx.now)
        wanted = min(capacity, len(eligible))
        if bucket.available < wanted:
            wake = bucket.ready_at(wanted)
        capacity = min(capacity, bucket.available)
    if capacity <= 0:
        return Choice((), wake)
    chosen = heapq.nsmallest(capacity, eligible, key=lambda c: c[0])
    sends = []
    for _, device, attempt in chosen:
        record = ctx.update_record(device, attempt)
        sends.append(SendUpdate(record, ctx.command(record)))
    return Choice(tuple(sends), wake)


def take_tokens(ctx: PassContext, state: RolloutState, sent: int) -> RolloutState:
    """The token bucket after this pass's sends (refilled up to now whatever was sent)."""
    rate = ctx.rollout.spec.strategy.max_per_minute
    if rate is None:
        return state
    bucket = TokenBucket.restore(rate, state.tokens, state.tokens_at, ctx.now).take(sent)
    return state.evolve(tokens=bucket.tokens, tokens_at=bucket.at)
