"""The exponential ramp (`strategy.ramp`): commands per minute start at startPerMinute and
grow by `factor` every `every`, never above maxPerMinute; a pause starts it again."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.pacing import Pace
from fleetwave.planner.plan import apply_control
from fleetwave.resources.loading import load_text
from tests.planner.fleet import T0, FakeFleet, fleet, make_rollout

RAMP = {"startPerMinute": 20, "factor": 2, "every": "1m", "maxPerMinute": 160}


def ramped(**ramp: object) -> dict[str, object]:
    return {"steps": [{"percent": 100}], "maxInFlight": 100_000, "ramp": {**RAMP, **ramp}}


@pytest.mark.parametrize(("start", "factor", "every", "cap", "at", "rate"), [
    pytest.param(10, 2.0, 60.0, 50, 0.0, 10.0, id="starts-at-start"),
    pytest.param(10, 2.0, 60.0, 50, 60.0, 20.0, id="doubles-after-every"),
    pytest.param(10, 2.0, 60.0, 50, 179.9, 40.0, id="third-period"),
    pytest.param(10, 2.0, 60.0, 50, 180.0, 50.0, id="capped"),
    pytest.param(10, 1.0, 60.0, 50, 9999.0, 10.0, id="factor-one-is-flat"),
    pytest.param(10, 3.0, 30.0, 1000, 90.0, 270.0, id="triples-every-30s"),
    pytest.param(10, 2.0, 60.0, 50, -5.0, 10.0, id="before-since"),
])
def test_rate_at(start: int, factor: float, every: float, cap: int, at: float,
                 rate: float) -> None:
    assert Pace(start, factor, every, cap, since=0.0).rate_at(at) == rate


def test_a_strategy_max_per_minute_below_the_ramps_ceiling_caps_it() -> None:
    strategy = make_rollout(strategy={**ramped(), "maxPerMinute": 100}).spec.strategy
    pace = Pace.of(strategy, T0)
    assert pace is not None
    assert pace.rate_at(T0 + 3600) == 100.0


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 500), factor=st.floats(1.05, 10.0) | st.just(1.0),
       every=st.floats(0.5, 600.0),
       extra=st.integers(0, 5000), times=st.lists(st.floats(-100.0, 1e5), min_size=2,
                                                  max_size=20))
def test_the_ramp_is_monotone_and_bounded(start: int, factor: float, every: float, extra: int,
                                          times: list[float]) -> None:
    cap = start + extra
    pace = Pace(start, factor, every, cap, since=0.0)
    rates = [pace.rate_at(t) for t in sorted(times)]
    assert all(a <= b for a, b in pairwise(rates))
    assert all(start <= r <= cap for r in rates)
    sent = [pace.sent_by(t) for t in sorted(times)]
    assert all(a <= b for a, b in pairwise(sent))


def run_ramp(f: FakeFleet, start: float, seconds: int) -> list[float]:
    for s in range(seconds):
        f.step(start + s)
    return [t for t, _, action in f.sent if action == "update"]


def test_commands_follow_the_ramps_schedule_within_five_percent() -> None:
    r = make_rollout(strategy=ramped())
    f = FakeFleet([r], fleet(600))
    sends = run_ramp(f, T0, 300)
    pace = Pace.of(r.spec.strategy, T0)
    assert pace is not None
    for minute in (2, 3, 4, 5):
        t = T0 + 60 * minute
        expected = pace.sent_by(t)
        got = sum(1 for s in sends if s < t)
        assert abs(got - expected) <= 0.05 * expected, (minute, got, expected)
    per_minute = [sum(1 for s in sends if T0 + 60 * m <= s < T0 + 60 * (m + 1))
                  for m in range(5)]
    assert all(n <= 160 * 1.05 for n in per_minute)


def test_a_pause_starts_the_ramp_again_from_its_start() -> None:
    r = make_rollout(strategy=ramped())
    f = FakeFleet([r], fleet(600))
    run_ramp(f, T0, 200)  # up to 160/min
    assert f.log[-1].state.ramp_since == T0
    f.states[r.name], _ = apply_control(f.states[r.name], "pause", T0 + 200)
    run_ramp(f, T0 + 200, 10)
    assert f.states[r.name].ramp_since is None
    f.states[r.name], _ = apply_control(f.states[r.name], "resume", T0 + 210)
    before = len(f.sent)
    run_ramp(f, T0 + 210, 60)
    # The first minute after resuming sends at the start rate (plus the 3 s burst), not 160.
    assert 20 <= len(f.sent) - before <= 20 * 1.05 + 1


def test_a_failure_pause_resets_the_ramp_too() -> None:
    r = make_rollout(strategy=ramped(), failurePolicy={"maxFailurePercent": 10,
                                                       "minSample": 5, "retries": 0})
    f = FakeFleet([r], fleet(300), lambda uuid, rec: "fail" if int(uuid[1:]) % 3 else "succeed")
    run_ramp(f, T0, 30)
    assert f.states[r.name].paused_by == "failure"
    assert f.states[r.name].ramp_since is None


def test_waiting_for_tokens_wakes_the_loop_when_the_next_one_is_due() -> None:
    r = make_rollout(strategy=ramped())
    f = FakeFleet([r], fleet(100))
    fp = f.step(T0)
    p = fp.plans[r.name]
    # 20 a minute: the next token is due 3 s after the first command took the only one.
    assert p.next_wake == pytest.approx(T0 + 3.0)


@pytest.mark.parametrize(("ramp", "field", "says"), [
    pytest.param("{startPerMinute: 500, maxPerMinute: 100}",
                 "spec.strategy.ramp.startPerMinute", "exceeds the ramp's maxPerMinute 100",
                 id="start-above-ceiling"),
    pytest.param("{startPerMinute: 10, maxPerMinute: 100, factor: 0.5}",
                 "spec.strategy.ramp.factor", "below the minimum of 1", id="shrinking"),
    pytest.param("{startPerMinute: 10, maxPerMinute: 100, every: 0s}",
                 "spec.strategy.ramp.every", "more than 0s", id="every-zero"),
    pytest.param("{startPerMinute: 10}", "spec.strategy.ramp.maxPerMinute", "required",
                 id="no-ceiling"),
])
def test_validate_refuses_a_wrong_ramp_by_file_line_and_field(ramp: str, field: str,
                                                              says: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '1.0.6'\n  selector: {}\n"
            f"  strategy:\n    ramp: {ramp}\n")
    errors = load_text(text, "r.yaml").errors
    assert [e.field for e in errors] == [field]
    assert says in errors[0].message and errors[0].line == 9


def test_fleetwave_plan_times_follow_the_ramp() -> None:
    from fleetwave.planner.preview import preview
    r = make_rollout(strategy={**ramped(), "steps": [{"percent": 10}, {"percent": 100}]})
    devices = fleet(400)
    [shown] = preview([r], devices, T0).rollouts
    pace = Pace.of(r.spec.strategy, T0)
    assert pace is not None
    done = shown.waves[-1].sending_done
    assert done is not None
    # Every one of the 400 sent by `done`, and not later than the schedule needs: the
    # bucket's first token is there at the start, so the schedule is one command ahead.
    assert 399 <= pace.sent_by(done) <= 401
    assert any("ramp: 20/min" in n for n in shown.notes)
    flat = make_rollout(strategy={"steps": [{"percent": 10}, {"percent": 100}],
                                  "maxPerMinute": 20})
    [slow] = preview([flat], devices, T0).rollouts
    assert slow.waves[-1].sending_done is not None and slow.waves[-1].sending_done > done
