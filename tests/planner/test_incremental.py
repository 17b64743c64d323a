"""Incremental planning: a settled plan is what planning again would return, so it is reused.

The engine passes `unchanged` (rollout -> its last plan) for rollouts whose inputs did
not change; plan_fleet returns those plans without looking at a device. That is only
sound if a settled plan is a fixed point, which the first test checks on every pass of
whole rollouts (successes, failures, pauses, pacing).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import DeviceView, Plan
from fleetwave.planner.plan import plan_fleet
from fleetwave.planner.selectors import compile_selector
from fleetwave.resources.model import Operator, Requirement, RolloutSpec, Selector
from fleetwave.resources.selectors import rollout_targets
from tests.planner.fleet import T0, FakeFleet, always, fleet, make_rollout


def _comparable(p: Plan) -> tuple[object, ...]:
    state = dataclasses.replace(p.state, tokens=None, tokens_at=None)
    return p.actions, state, p.status, p.events, p.next_wake


@pytest.mark.parametrize("behaviour", ["succeed", "fail"])
@pytest.mark.parametrize("spec", [
    {},
    {"strategy": {"steps": [{"percent": 10}, {"percent": 100, "pause": "10m"}],
                  "maxInFlight": 5, "maxPerMinute": 60}},
    {"strategy": {"steps": [{"percent": 50}, {"percent": 100}], "manualApproval": True}},
], ids=["plain", "paced-with-pause", "manual-approval"])
def test_a_settled_plan_is_what_planning_again_returns(spec: dict[str, object],
                                                       behaviour: str) -> None:
    f = FakeFleet([make_rollout(**spec)], fleet(40), always(behaviour))
    settled = 0
    now = T0
    while now < T0 + 3 * 3600:
        fp = f.step(now)
        now += 45.0
        for name, p in fp.plans.items():
            if not p.settled or (p.next_wake is not None and now >= p.next_wake):
                continue
            settled += 1
            again = f.plan(now)
            assert _comparable(again.plans[name]) == _comparable(p)
            reused = plan_fleet(f.rollouts, list(f.devices.values()), f.records, f.states,
                                now, cache=f.cache, unchanged={name: p})
            assert reused.plans[name] is p
            assert reused.replanned == frozenset()
    assert settled > 0


def test_a_plan_is_not_reused_after_its_wake_or_for_another_state() -> None:
    f = FakeFleet([make_rollout()], fleet(20))
    f.step(T0)
    fp = f.step(T0 + 30)
    name = f.rollouts[0].name
    p = fp.plans[name]
    f.states[name] = p.state
    rollout = f.rollouts[0]
    assert not dataclasses.replace(p, settled=True).reusable(
        rollout, p.state.evolve(current_step=p.state.current_step + 1), T0 + 31)
    if p.next_wake is not None:
        assert not dataclasses.replace(p, settled=True).reusable(rollout, p.state, p.next_wake)
    assert not dataclasses.replace(p, settled=False).reusable(rollout, p.state, T0 + 31)


def test_one_component_is_replanned_whole() -> None:
    """Conflicts couple the rollouts of a component: one changed, all of them replanned."""
    a = make_rollout("a", selector={"matchLabels": {"ring": "1"}})
    b = make_rollout("b", selector={"matchLabels": {"ring": "2"}})
    f = FakeFleet([a, b], fleet(10, ring="1") + fleet(10, prefix="e", ring="2"))
    now = T0
    fp = f.step(now)
    while not all(p.settled for p in fp.plans.values()):
        now += 600
        fp = f.step(now)
    unchanged = {"a": fp.plans["a"]}  # b changed, so a's plan is not enough
    again = plan_fleet(f.rollouts, list(f.devices.values()), f.records, f.states, now,
                       cache=f.cache, unchanged=unchanged)
    assert again.replanned == {"a", "b"}
    both = plan_fleet(f.rollouts, list(f.devices.values()), f.records, f.states, now,
                      cache=f.cache, unchanged=dict(fp.plans))
    assert both.replanned == frozenset()
    assert both.plans == fp.plans


LABELS = st.dictionaries(st.sampled_from(["env", "site", "type"]),
                         st.sampled_from(["a", "b", "c"]), max_size=3)
REQUIREMENTS = st.builds(
    Requirement, key=st.sampled_from(["env", "site", "type"]),
    operator=st.sampled_from(list(Operator)),
    values=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2).map(tuple))


@settings(max_examples=300, deadline=None)
@given(match_labels=LABELS, expressions=st.lists(REQUIREMENTS, max_size=3),
       listed=st.lists(st.sampled_from(["d1", "d2", "d3"]), max_size=2),
       excluded=st.lists(st.sampled_from(["d1", "d2", "d3"]), max_size=2),
       uuid=st.sampled_from(["d1", "d2", "d3"]), labels=LABELS)
def test_the_compiled_selector_means_what_resources_selectors_says(
        match_labels: dict[str, str], expressions: list[Requirement], listed: list[str],
        excluded: list[str], uuid: str, labels: dict[str, str]) -> None:
    selector = Selector(match_labels=match_labels, match_expressions=tuple(
        Requirement(r.key, r.operator, () if r.operator in (Operator.EXISTS,
                                                            Operator.DOES_NOT_EXIST)
                    else r.values) for r in expressions), devices=tuple(listed))
    spec = dataclasses.replace(make_rollout().spec, selector=selector, exclude=tuple(excluded))
    assert isinstance(spec, RolloutSpec)
    compiled = compile_selector(selector, tuple(excluded))
    assert compiled(DeviceView(uuid, labels=labels)) == rollout_targets(spec, labels, uuid)
