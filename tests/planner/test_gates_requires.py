"""Mandatory intermediate versions (`strategy.requires`): a device below `below` goes to `via`
first, then to the target, both as attempts of the same rollout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave.planner.model import SendUpdate
from fleetwave.protocol.versions import compare
from fleetwave.resources.loading import load_text
from tests.planner.fleet import T0, FakeFleet, always, device, make_rollout

HOP = {"steps": [{"percent": 100}], "requires": [{"below": "2.0.0", "via": "2.0.0"}]}


def hops_of(f: FakeFleet, rollout: str, uuid: str) -> list[tuple[int, str, str]]:
    """(attempt, to_version, state) of a device's update attempts, oldest first."""
    recs = sorted(f.records[rollout].get(uuid, []), key=lambda r: (r.created_at, r.attempt))
    return [(r.attempt, r.to_version, r.state.value) for r in recs if r.action == "update"]


@pytest.mark.parametrize(("reported", "path"), [
    pytest.param("1.0.5", ["2.0.0", "3.0.0"], id="below-goes-via"),
    pytest.param("1.9.9-rc.1", ["2.0.0", "3.0.0"], id="pre-release-below"),
    pytest.param("2.0.0", ["3.0.0"], id="at-via-goes-straight"),
    pytest.param("2.5.0", ["3.0.0"], id="above-via"),
    pytest.param("nightly", ["3.0.0"], id="not-a-version-goes-straight"),
])
def test_the_path_a_device_takes(reported: str, path: list[str]) -> None:
    r = make_rollout(version="3.0.0", strategy=HOP)
    f = FakeFleet([r], [device("d00001", reported)])
    f.run(T0, T0 + 3 * 3600, tick=60)
    assert [v for _, v, _ in hops_of(f, r.name, "d00001")] == path
    assert [a for a, _, _ in hops_of(f, r.name, "d00001")] == list(range(1, len(path) + 1))
    assert f.version_of("d00001") == "3.0.0"
    assert f.log[-1].status.phase == "Completed"


def test_two_hops_are_taken_in_order() -> None:
    r = make_rollout(version="4.0.0", strategy={"steps": [{"percent": 100}], "requires": [
        {"below": "3.0.0", "via": "3.0.0"}, {"below": "2.0.0", "via": "2.0.0"}]})
    f = FakeFleet([r], [device("d00001", "1.0.0")])
    f.run(T0, T0 + 4 * 3600, tick=60)
    assert [v for _, v, _ in hops_of(f, r.name, "d00001")] == ["2.0.0", "3.0.0", "4.0.0"]


def test_success_of_via_waits_for_the_state_showing_it() -> None:
    r = make_rollout(version="3.0.0", strategy=HOP)
    f = FakeFleet([r], [device("d00001", "1.0.5")])
    f.step(T0)
    f.set_version("d00001", "1.0.5")  # the success came, the new state has not yet
    fp = f.plan(T0 + 60)
    assert not [a for a in fp.plans[r.name].actions if isinstance(a, SendUpdate)]


def test_a_failing_via_counts_against_the_budget_and_never_skips_to_the_target() -> None:
    r = make_rollout(version="3.0.0", strategy=HOP,
                     failurePolicy={"retries": 1, "maxFailurePercent": 100})
    f = FakeFleet([r], [device("d00001", "1.0.5")], always("fail"))
    f.run(T0, T0 + 3600, tick=60)
    assert {v for _, v, _ in hops_of(f, r.name, "d00001")} == {"2.0.0"}
    assert f.log[-1].status.counts["parked"] == 1


@settings(max_examples=40, deadline=None)
@given(versions=st.lists(st.sampled_from(["0.9.0", "1.0.5", "1.9.9", "2.0.0", "2.1.0",
                                          "3.0.0"]), min_size=1, max_size=12),
       outcomes=st.lists(st.sampled_from(["succeed", "fail", "silent"]), min_size=1,
                         max_size=5))
def test_a_device_below_never_jumps_straight_to_the_target(versions: list[str],
                                                           outcomes: list[str]) -> None:
    r = make_rollout(version="3.0.0", strategy=HOP,
                     failurePolicy={"retries": 2, "maxFailurePercent": 100})
    devices = [device(f"d{i:05d}", v) for i, v in enumerate(versions)]
    f = FakeFleet([r], devices,
                  lambda uuid, rec: outcomes[(int(uuid[1:]) + rec.attempt) % len(outcomes)])
    now = T0
    for _ in range(40):
        fp = f.plan(now)
        for a in fp.plans[r.name].actions:
            if isinstance(a, SendUpdate) and a.record.to_version == "3.0.0":
                assert compare(f.version_of(a.record.device), "2.0.0") != -1
        f.step(now)
        now += 5 * 60


@pytest.mark.parametrize(("hop", "field", "says"), [
    pytest.param("{below: 2.0.0, via: 3.0.0}", "spec.strategy.requires[0].via",
                 "is not below the rollout's version '3.0.0'", id="via-at-target"),
    pytest.param("{below: 2.0.0, via: 1.5.0}", "spec.strategy.requires[0].via",
                 "is below `below`", id="via-below-below"),
    pytest.param("{below: soon, via: 2.0.0}", "spec.strategy.requires[0].below",
                 "not a version", id="not-a-version"),
])
def test_validate_refuses_a_wrong_hop_by_file_line_and_field(hop: str, field: str,
                                                             says: str) -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec:\n  component: agent\n  version: '3.0.0'\n  selector: {}\n"
            f"  strategy:\n    requires:\n      - {hop}\n")
    errors = load_text(text, "r.yaml").errors
    assert [e.field for e in errors] == [field]
    assert says in errors[0].message and errors[0].line == 10
