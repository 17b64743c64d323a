"""Who a rollout targets, who it leaves alone, and in which wave each device falls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import DeviceView, HashCache, Plan, SendUpdate
from fleetwave.planner.plan import plan, plan_fleet
from fleetwave.planner.selectors import compile_selector
from fleetwave.planner.waves import device_hash, step_of, step_size, thresholds
from fleetwave.resources.model import Operator, Requirement, Selector
from tests.planner.fleet import T0, device, fleet, make_rollout


def dv(**labels: str) -> DeviceView:
    return DeviceView("u1", {"agent": "1"}, labels)


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    pytest.param(Selector({"t": "a"}), {"t": "a"}, True, id="matchLabels-hit"),
    pytest.param(Selector({"t": "a"}), {"t": "b"}, False, id="matchLabels-miss"),
    pytest.param(Selector(match_expressions=(Requirement("env", Operator.IN, ("p", "s")),)),
                 {"env": "s"}, True, id="In-hit"),
    pytest.param(Selector(match_expressions=(Requirement("env", Operator.IN, ("p",)),)),
                 {}, False, id="In-missing-key"),
    pytest.param(Selector(match_expressions=(Requirement("env", Operator.NOT_IN, ("p",)),)),
                 {}, True, id="NotIn-missing-key-matches"),
    pytest.param(Selector(match_expressions=(Requirement("env", Operator.NOT_IN, ("p",)),)),
                 {"env": "p"}, False, id="NotIn-miss"),
    pytest.param(Selector(match_expressions=(Requirement("gpu", Operator.EXISTS),)),
                 {"gpu": ""}, True, id="Exists"),
    pytest.param(Selector(match_expressions=(Requirement("gpu", Operator.DOES_NOT_EXIST),)),
                 {"gpu": "1"}, False, id="DoesNotExist"),
    pytest.param(Selector(devices=("u1",)), {}, True, id="explicit-device"),
    pytest.param(Selector(), {"t": "a"}, True, id="empty-selector-targets-everyone"),
])
def test_selector(selector: Selector, labels: dict[str, str], expected: bool) -> None:
    assert compile_selector(selector)(dv(**labels)) is expected


def test_exclude_wins_over_explicit_devices() -> None:
    assert not compile_selector(Selector(devices=("u1",)), exclude=("u1",))(dv())


@pytest.mark.parametrize(("percent", "n", "size"), [
    pytest.param(5, 10, 1, id="canary-rounds-up"),
    pytest.param(5, 1000, 50, id="exact"),
    pytest.param(25, 3, 1, id="small-fleet"),
    pytest.param(100, 7, 7, id="all"),
    pytest.param(1, 1, 1, id="one-device"),
])
def test_step_size(percent: int, n: int, size: int) -> None:
    assert step_size(percent, n) == size


def members(n_devices: int, percent: int, name: str = "r") -> set[str]:
    uuids = [f"d{i}" for i in range(n_devices)]
    hs = sorted(device_hash(name, u) for u in uuids)
    limits = thresholds([percent], hs)
    return {u for u in uuids if step_of(device_hash(name, u), limits) == 0}


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), a=st.integers(1, 100), b=st.integers(1, 100))
def test_membership_is_monotone_and_sized(n: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    small, big = members(n, low), members(n, high)
    assert small <= big
    assert len(small) == step_size(low, n)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 200), pct=st.integers(1, 100), order=st.randoms())
def test_membership_is_stable_across_restarts_and_input_order(n: int, pct: int,
                                                              order: object) -> None:
    """Same inputs, fresh cache, shuffled device order: the same first commands."""
    import random
    assert isinstance(order, random.Random)
    r = make_rollout(strategy={"steps": [{"percent": pct}, {"percent": 100}],
                               "maxInFlight": 1000})
    devices = fleet(n)
    shuffled = devices[:]
    order.shuffle(shuffled)
    first = plan(r, devices, {}, None, T0, cache=HashCache())
    second = plan(r, shuffled, {}, None, T0, cache=HashCache())
    ids = lambda p: {a.record.id for a in p.actions if isinstance(a, SendUpdate)}  # noqa: E731
    assert ids(first) == ids(second)
    assert len(ids(first)) == step_size(pct, n)


def test_waves_differ_between_rollouts() -> None:
    assert members(1000, 5, "a") != members(1000, 5, "b")


def test_device_joining_later_takes_its_own_place() -> None:
    """A late device is in the canary only if its own hash says so; nobody else moves out."""
    base = members(100, 10)
    uuids = [f"d{i}" for i in range(100)] + ["late"]
    hs = sorted(device_hash("r", u) for u in uuids)
    limits = thresholds([10], hs)
    after = {u for u in uuids if step_of(device_hash("r", u), limits) == 0}
    assert base - after <= {max(base, key=lambda u: device_hash("r", u))}


class TestConflicts:
    def test_two_rollouts_on_one_device_conflict_and_neither_touches_it(self) -> None:
        a = make_rollout("a", strategy={"steps": [{"percent": 100}]})
        b = make_rollout("b", selector={"devices": ["d00000"]},
                         strategy={"steps": [{"percent": 100}]})
        fp = plan_fleet([a, b], fleet(3), {}, {}, T0)
        for name in ("a", "b"):
            p = fp.plans[name]
            assert p.status.counts["conflicted"] == 1
            cond = {c.type: c for c in p.status.conditions}["Conflicted"]
            assert (cond.status, cond.reason) == ("True", "ConflictingRollouts")
            assert all(a.record.device != "d00000" for a in p.actions
                       if isinstance(a, SendUpdate))
        assert len(fp.plans["a"].actions) == 2

    def test_api_rollout_overrides_instead_of_conflicting(self) -> None:
        a = make_rollout("a", strategy={"steps": [{"percent": 100}]})
        api = make_rollout("adhoc", source="api", version="2.0.0",
                           selector={"devices": ["d00000"]},
                           strategy={"steps": [{"percent": 100}]})
        fp = plan_fleet([a, api], fleet(3), {}, {}, T0)
        assert fp.plans["a"].status.counts["overridden"] == 1
        assert fp.plans["a"].status.counts["conflicted"] == 0
        assert [x.record.device for x in fp.plans["adhoc"].actions
                if isinstance(x, SendUpdate)] == ["d00000"]

    def test_other_components_do_not_conflict(self) -> None:
        a = make_rollout("a", strategy={"steps": [{"percent": 100}]})
        b = make_rollout("b", component="nodered", strategy={"steps": [{"percent": 100}]})
        fp = plan_fleet([a, b], [device("x")], {}, {}, T0)
        assert fp.plans["a"].status.counts["conflicted"] == 0
        assert len(fp.plans["b"].actions) == 1


def test_send_limit_spreads_a_wave_over_passes_in_wave_order() -> None:
    """The engine bounds a pass's new commands by its outbox's room: the same devices go,
    lowest wave hash first, over more passes, and the plan says it held some back."""
    r = make_rollout(strategy={"steps": [{"percent": 100}], "maxInFlight": 1000})
    devices = fleet(20)

    def sent(p: Plan) -> list[str]:
        return [a.record.device for a in p.actions if isinstance(a, SendUpdate)]

    whole = plan(r, devices, {}, None, T0)
    assert len(sent(whole)) == 20 and not whole.held_back
    first = plan(r, devices, {}, None, T0, send_limit=8)
    assert sent(first) == sent(whole)[:8]
    assert first.held_back and not first.settled
    full = plan(r, devices, {}, first.state, T0, send_limit=0)
    assert sent(full) == [] and full.held_back and not full.settled
    roomy = plan(r, devices, {}, None, T0, send_limit=20)
    assert sent(roomy) == sent(whole) and not roomy.held_back
