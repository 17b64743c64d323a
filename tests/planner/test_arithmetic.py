"""The worked examples in the planner's docstrings, and properties of its arithmetic."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner import budget, conditions, schedule, selectors, waves
from fleetwave.planner.budget import TokenBucket, budget_exceeded
from fleetwave.resources.model import FailurePolicy


@pytest.mark.parametrize("module", [budget, conditions, schedule, selectors, waves],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0


@settings(max_examples=100, deadline=None)
@given(rate=st.integers(1, 5000), gaps=st.lists(st.floats(0, 30), min_size=1, max_size=80))
def test_token_bucket_never_exceeds_rate_plus_burst_in_any_minute(rate: int,
                                                                   gaps: list[float]) -> None:
    """Greedy sending at arbitrary pass times stays within maxPerMinute × (1 + 5 %) + 1."""
    now = 0.0
    bucket = TokenBucket.restore(rate, None, None, now)
    sends: list[tuple[float, int]] = []
    for gap in gaps:
        now += gap
        bucket = bucket.refill(now)
        n = bucket.available
        bucket = bucket.take(n)
        sends.append((now, n))
    for start, _ in sends:
        in_minute = sum(n for t, n in sends if start <= t < start + 60)
        assert in_minute <= rate * 1.05 + 1


@settings(max_examples=200)
@given(failures=st.integers(0, 100), extra=st.integers(0, 100), min_sample=st.integers(0, 50),
       max_pct=st.floats(0, 100))
def test_budget_needs_min_sample_and_strictly_more(failures: int, extra: int, min_sample: int,
                                                   max_pct: float) -> None:
    terminal = failures + extra
    policy = FailurePolicy(max_failure_percent=max_pct, min_sample=min_sample)
    fired = budget_exceeded(policy, failures, terminal)
    if terminal < max(min_sample, 1):
        assert not fired
    else:
        assert fired == (100.0 * failures / terminal > max_pct)
