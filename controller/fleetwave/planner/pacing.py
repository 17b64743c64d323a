"""Who may be sent a command next, and how fast: per-site budgets and the exponential ramp.

`maxInFlight` protects the fleet as a whole; a budget protects one site (a region, a
store, a factory line) from having too many of its devices down at once, as
flightctl's per-site disruption limits do. The ramp is AWS IoT Jobs' exponential
rollout rate: start slow, multiply while nothing goes wrong, never above a ceiling.
A plain `maxPerMinute` is the ramp that starts at its ceiling, so the token bucket
has one code path. Pure arithmetic over labels, counts and the clock.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleetwave.planner.budget import TokenBucket
from fleetwave.planner.model import DeviceView, RolloutState
from fleetwave.resources.model import Budget, Strategy


class SiteBudgets:
    """Free slots per label value, for every budget of a rollout, during one pass.

    >>> from fleetwave.resources.model import Budget
    >>> b = SiteBudgets([Budget("region", 1)], [DeviceView("a", labels={"region": "eu"})])
    >>> b.admit(DeviceView("b", labels={"region": "eu"})), b.admit(DeviceView("c"))
    (False, True)
    """

    __slots__ = ("_limits", "_used")

    def __init__(self, budgets: Sequence[Budget], busy: Iterable[DeviceView]) -> None:
        self._limits = [(b.group_by, b.max_in_flight) for b in budgets]
        self._used: list[Counter[str | None]] = [Counter() for _ in budgets]
        for d in busy:
            for (label, _), used in zip(self._limits, self._used, strict=True):
                used[d.labels.get(label)] += 1

    def admit(self, device: DeviceView) -> bool:
        """Take a slot in each of the device's sites if every one has one free."""
        keys = [device.labels.get(label) for label, _ in self._limits]
        if any(used[k] >= limit for k, (_, limit), used
               in zip(keys, self._limits, self._used, strict=True)):
            return False
        for k, used in zip(keys, self._used, strict=True):
            used[k] += 1
        return True


@dataclass(frozen=True, slots=True)
class Pace:
    """Commands per minute as a step function of time: `start` × `factor`^k, at most `cap`.

    k counts whole periods of `every` since `since`. With start 10, factor 2, every 60 s
    and cap 50: 10/min for the first minute, then 20, 40, and 50 from the fourth on.

    >>> p = Pace(10, 2.0, 60.0, 50, since=0.0)
    >>> [p.rate_at(t) for t in (0, 59, 60, 120, 180, 10_000)]
    [10.0, 10.0, 20.0, 40.0, 50.0, 50.0]
    >>> p.next_change(130.0), p.next_change(200.0)
    (180.0, None)
    """

    start: float
    factor: float
    every: float
    cap: float
    since: float

    @classmethod
    def of(cls, strategy: Strategy, since: float | None) -> Pace | None:
        """The pace of `strategy` (None: unlimited); a ramp runs from `since`."""
        ramp, fixed = strategy.ramp, strategy.max_per_minute
        if ramp is None:
            return None if fixed is None else cls(fixed, 1.0, 60.0, fixed, 0.0)
        cap = float(min(ramp.max_per_minute, fixed) if fixed is not None
                    else ramp.max_per_minute)
        return cls(min(float(ramp.start_per_minute), cap), ramp.factor,
                   max(ramp.every.total_seconds(), 0.001), cap,
                   since if since is not None else 0.0)

    @property
    def _last_period(self) -> int:
        """The first k whose rate reaches the cap (the ramp is flat after it)."""
        if self.factor <= 1.0 or self.start >= self.cap:
            return 0
        return math.ceil(math.log(self.cap / self.start) / math.log(self.factor) - 1e-12)

    def _period(self, t: float) -> int:
        if t <= self.since:
            return 0
        return min(int((t - self.since) // self.every), self._last_period)

    def rate_at(self, t: float) -> float:
        return min(self.cap, self.start * self.factor ** self._period(t))

    def next_change(self, t: float) -> float | None:
        """When the rate next grows after `t` (None: it is at its ceiling for good)."""
        k = self._period(t)
        while k < self._last_period:
            change = self.since + (k + 1) * self.every
            if change > t:  # floor division can land one period short in floating point
                return change
            k += 1
        return None

    def bucket(self, tokens: float | None, at: float | None, now: float) -> TokenBucket:
        """The token bucket at `now`, refilled period by period at each period's rate."""
        if tokens is None or at is None:
            return TokenBucket.restore(self.rate_at(now), None, None, now)
        return self.refill(TokenBucket(self.rate_at(at), tokens, at), now)

    def refill(self, bucket: TokenBucket, now: float) -> TokenBucket:
        t = bucket.at
        while True:
            change = self.next_change(t)
            if change is None or change >= now:
                return TokenBucket(self.rate_at(t), bucket.tokens, t).refill(now)
            bucket = TokenBucket(self.rate_at(t), bucket.tokens, t).refill(change)
            t = change

    def ready_at(self, bucket: TokenBucket, wanted: int) -> float:
        """When `wanted` tokens (at most the bucket's capacity then) will be there."""
        while True:
            at = bucket.ready_at(wanted)
            change = self.next_change(bucket.at)
            if change is None or at <= change:
                return at
            bucket = self.refill(bucket, change)

    def sent_by(self, t: float) -> float:
        """Commands the pace allows from `since` to `t` (its schedule, without the burst).

        >>> Pace(10, 2.0, 60.0, 50, since=0.0).sent_by(240.0)
        120.0
        """
        total, a = 0.0, self.since
        while a < t:
            change = self.next_change(a)
            b = t if change is None else min(t, change)
            total += (b - a) * self.rate_at(a) / 60.0
            a = b
        return total


def pace_state(strategy: Strategy, state: RolloutState, now: float, *,
               running: bool, halted: bool) -> RolloutState:
    """Start the ramp's clock when the rollout can send, and reset it when it is paused.

    A reset also refills the bucket at the start rate, so a resumed rollout begins
    again as gently as it first did.
    """
    if strategy.ramp is None:
        return state
    if halted:
        return state if state.ramp_since is None else state.evolve(
            ramp_since=None, tokens=None, tokens_at=None)
    if running and state.ramp_since is None:
        return state.evolve(ramp_since=now, tokens=None, tokens_at=None)
    return state
