"""The failure budget and the pacing token bucket: small arithmetic, kept apart to test.

Both are plain functions of counts and the clock, with worked examples, because
operators reason about them with a calculator when a rollout stops.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from fleetwave.planner.conditions import EventReason
from fleetwave.planner.model import PlannedEvent, RolloutState, StoppedBy
from fleetwave.resources.model import FailureAction, FailurePolicy
from fleetwave.resources.vocabulary import Phase


def failure_rate(failures: int, terminal: int) -> float:
    """Percent of terminal devices (unreachable ones excluded by the caller) that failed.

    >>> failure_rate(3, 10)
    30.0
    >>> failure_rate(0, 0)
    0.0
    """
    return 100.0 * failures / terminal if terminal else 0.0


def budget_exceeded(policy: FailurePolicy, failures: int, terminal: int) -> bool:
    """True when, with at least minSample terminal devices, the rate exceeds the maximum.

    With maxFailurePercent 10 and minSample 5: 1 failure in 4 terminal devices does
    not fire (sample too small); 1 in 10 is exactly 10 % and does not fire either
    ("exceeds"); 2 in 10 fires.

    >>> p = FailurePolicy(max_failure_percent=10, min_sample=5)
    >>> budget_exceeded(p, 1, 4), budget_exceeded(p, 1, 10), budget_exceeded(p, 2, 10)
    (False, False, True)
    """
    if terminal < max(policy.min_sample, 1):
        return False
    return failure_rate(failures, terminal) > policy.max_failure_percent


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """Stage 3's result: the state with the penalty box and the policy's action applied."""

    state: RolloutState
    events: tuple[PlannedEvent, ...]
    replan_now: bool
    """A rollback was just ordered: the next pass (at once) sends the rollbacks."""


def enforce_budget(policy: FailurePolicy, state: RolloutState, failures: int, terminal: int,
                   newly_parked: Set[str]) -> BudgetVerdict:
    """Park devices out of retries, then apply the failure policy once the budget is spent.

    Only failures beyond `budget_floor` (those seen since a user resumed after a
    failure pause) can fire it again, and a stopped or completed rollout never does.
    """
    events = [PlannedEvent("Warning", EventReason.DEVICE_PARKED,
                           f"device {u} failed {policy.retries + 1} times: "
                           "parked until `promote --device` or a new generation", u)
              for u in sorted(newly_parked)]
    over_floor = failures - state.budget_floor
    state = state.evolve(parked=frozenset(state.parked | newly_parked), failures=failures)
    stopped = state.aborted is not None or state.rolled_back is not None
    if (stopped or state.paused_by in ("failure", "analysis") or state.phase == Phase.COMPLETED
            or over_floor <= 0 or not budget_exceeded(policy, failures, terminal)):
        return BudgetVerdict(state, tuple(events), False)
    rate = failure_rate(failures, terminal)
    action = policy.action
    events.append(PlannedEvent(
        "Warning", EventReason.FAILURE_BUDGET_EXCEEDED,
        f"failure rate {rate:.1f}% over {terminal} devices exceeds "
        f"{policy.max_failure_percent:g}%: {action.value}"))
    state, replan_now = apply_failure_action(action, state, "failure")
    return BudgetVerdict(state, tuple(events), replan_now)


def apply_failure_action(action: FailureAction, state: RolloutState,
                         by: StoppedBy) -> tuple[RolloutState, bool]:
    """`failurePolicy.action` applied by `by` (the budget or an analysis); True when a
    rollback was ordered, which the next pass (at once) sends."""
    if action == FailureAction.PAUSE:
        return state.evolve(paused_by=by), False
    if action == FailureAction.ABORT:
        return state.evolve(aborted=by), False
    return state.evolve(rolled_back=by), True


BURST_SECONDS = 3.0
"""Bucket capacity in seconds of refill. Small, so that any sliding minute sees at most
maxPerMinute × (1 + 3/60) commands: within the 5 % operators are promised."""


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """maxPerMinute pacing over commands sent, independent of health.

    Example: maxPerMinute 600 refills 10 tokens a second and holds at most 30
    (BURST_SECONDS). Empty at t=0, at t=1.5 s it holds 15 tokens; sending 15
    commands empties it again.
    """

    rate_per_minute: float
    tokens: float
    at: float

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate_per_minute * BURST_SECONDS / 60.0)

    @classmethod
    def restore(cls, rate_per_minute: float, tokens: float | None, at: float | None,
                now: float) -> TokenBucket:
        bucket = cls(rate_per_minute, tokens if tokens is not None else 0.0,
                     at if at is not None else now)
        if tokens is None:
            bucket = cls(rate_per_minute, bucket.capacity, now)
        return bucket.refill(now)

    def refill(self, now: float) -> TokenBucket:
        """The bucket at `now` (the clock never runs backwards for it)."""
        if now <= self.at:
            return self
        level = min(self.capacity, self.tokens + (now - self.at) * self.rate_per_minute / 60.0)
        return TokenBucket(self.rate_per_minute, level, now)

    @property
    def available(self) -> int:
        return int(self.tokens + 1e-9)

    def take(self, n: int) -> TokenBucket:
        return TokenBucket(self.rate_per_minute, max(0.0, self.tokens - n), self.at)

    def ready_at(self, wanted: int) -> float:
        """When `wanted` tokens (at most the capacity) will be there.

        >>> TokenBucket(600, 0.0, 100.0).ready_at(5)
        100.5
        """
        wanted_f = min(float(wanted), self.capacity)
        missing = max(0.0, wanted_f - self.tokens)
        return self.at + missing * 60.0 / self.rate_per_minute
